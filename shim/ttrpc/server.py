"""The asyncio ttrpc server: accept loop, service table and graceful shutdown.

Usage::

    server = Server(error_mapper=to_status)
    server.register_service("containerd.task.v2.Task", {"Create": Method(Req, svc.create)})
    await server.serve(listening_socket)   # returns after shutdown() or close()

Every task the server starts is tracked and awaited: connection tasks here, reader, writer and
handler tasks in :class:`ServerConnectionHandler`.

Resources are bounded: at most ``max_connections`` connections are served at once (beyond that
the server stops accepting, and new peers wait in the listen backlog until one ends), and each
connection has at most ``max_in_flight`` requests in flight (``_server_conn``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

from shim.ttrpc._server_conn import MAX_IN_FLIGHT, ServerConnectionHandler
from shim.ttrpc._service import ErrorMapper, Method, ServiceRegistry

__all__ = ["Server"]

log = logging.getLogger(__name__)

# accept() errors that mean "resources are short right now", retried after a pause as Go's
# net/http and ttrpc accept loops do; anything else ends serve().
_TRANSIENT_ACCEPT_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_ACCEPT_RETRY_DELAY = 0.1
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

#: Connections served at once. containerd opens one per task it runs on this shim (a pod's
#: containers share one shim, shim-protocol.md §1.4 and §2.4) plus a reconnect after a restart;
#: 256 is far above any pod. Each connection may hold one partial frame of up to 4 MiB (§1.2), as
#: in Go ttrpc, so this also bounds what idle peers can make us buffer.
MAX_CONNECTIONS = 256


class Server:
    """A ttrpc server for unary methods on an already-listening unix socket.

    Args:
        error_mapper: maps a handler exception to ``(code, message)``; :class:`RpcError`
            always answers its own code. Default: Unknown with ``str(exc)``.
        check_peer_credentials: drop connections whose peer's uid or gid differs from ours,
            as upstream servers do with ``SO_PEERCRED`` (shim-protocol.md §1.1).
        max_connections: connections served at once; further peers wait to be accepted.
        max_in_flight: requests in flight per connection before its socket is not read.
    """

    def __init__(
        self,
        error_mapper: ErrorMapper | None = None,
        *,
        check_peer_credentials: bool = False,
        max_connections: int = MAX_CONNECTIONS,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        if max_connections < 1 or max_in_flight < 1:
            raise ValueError("max_connections and max_in_flight must be at least 1")
        self._registry = ServiceRegistry(error_mapper)
        self._check_creds = check_peer_credentials
        self._max_connections = max_connections
        self._max_in_flight = max_in_flight
        self._room = asyncio.Event()  # set whenever a connection ends
        self._last_activity = time.monotonic()
        # None until the connection's streams are set up (see _run_connection).
        self._connections: dict[asyncio.Task[None], ServerConnectionHandler | None] = {}
        self._accept_task: asyncio.Task[None] | None = None
        self._closing = False
        self._count = 0

    @property
    def connections(self) -> int:
        """Connections being served now."""
        return len(self._connections)

    @property
    def requests_in_flight(self) -> int:
        """Requests being handled now, over all connections."""
        return sum(h.in_flight for h in self._connections.values() if h is not None)

    @property
    def last_activity(self) -> float:
        """``time.monotonic()`` when a connection was last accepted or a request began or
        ended (the server's creation before that)."""
        return self._last_activity

    def _touch(self) -> None:
        self._last_activity = time.monotonic()

    def register_service(self, name: str, methods: Mapping[str, Method[Any, Any]]) -> None:
        """Register service ``name`` (e.g. ``containerd.task.v2.Task``) with its methods.

        Raises:
            ValueError: ``name`` is already registered.
        """
        self._registry.register(name, methods)

    async def serve(self, sock: socket.socket) -> None:
        """Accept connections on the listening unix socket ``sock`` until shutdown/close.

        Returns once the server is closed and every connection has ended; ``sock`` is closed
        as soon as accepting stops. If this coroutine is cancelled, every connection is
        cancelled and the cancellation propagates.

        Raises:
            RuntimeError: the server is already serving or was closed.
            OSError: accept() failed with a non-transient error.
        """
        if self._accept_task is not None or self._closing:
            raise RuntimeError("Server.serve() may be called once, before shutdown")
        sock.setblocking(False)
        self._accept_task = asyncio.create_task(self._accept_loop(sock), name="ttrpc-accept")
        try:
            await self._accept_task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # serve() itself was cancelled, not the accept loop by shutdown/close
        finally:
            # Only now: closing the fd while sock_accept still watches it could race with
            # fd reuse. After close, new connect() calls fail instead of hanging in backlog.
            sock.close()
            if not self._closing:
                self.close()
            await self._wait_connections()

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish for up to ``grace`` seconds, then
        cancel what is left. Idle connections close at once, busy ones once idle."""
        self._stop_accepting()
        for handler in self._connections.values():
            if handler is not None:
                handler.begin_drain()
        tasks = set(self._connections)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace)
            if late:
                log.warning("ttrpc: cancelling %d connection(s) after %.1fs", len(late), grace)
        self.close()
        await self._wait_connections()

    def close(self) -> None:
        """Stop accepting and cancel every connection and its handlers now."""
        self._stop_accepting()
        for task in self._connections:
            task.cancel()

    def _stop_accepting(self) -> None:
        self._closing = True
        if self._accept_task is not None:
            self._accept_task.cancel()

    async def _wait_connections(self) -> None:
        while self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if len(self._connections) >= self._max_connections:
                # Backpressure, not refusal: the kernel keeps new peers in the listen backlog
                # until a connection ends.
                log.warning("ttrpc: %d connections open, not accepting until one ends",
                            len(self._connections))
                while len(self._connections) >= self._max_connections:
                    self._room.clear()
                    await self._room.wait()
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno not in _TRANSIENT_ACCEPT_ERRORS:
                    raise
                log.warning("ttrpc: accept failed, retrying: %s", exc)
                await asyncio.sleep(_ACCEPT_RETRY_DELAY)
                continue
            self._spawn_connection(conn)

    def _spawn_connection(self, conn: socket.socket) -> None:
        self._count += 1
        name = f"ttrpc-conn-{self._count}"
        task = asyncio.create_task(self._run_connection(conn, name), name=name)
        self._connections[task] = None  # the handler is attached once the streams exist
        task.add_done_callback(self._connection_done)
        self._touch()

    def _connection_done(self, task: asyncio.Task[None]) -> None:
        self._connections.pop(task, None)
        self._room.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("ttrpc: connection task failed", exc_info=task.exception())

    async def _run_connection(self, conn: socket.socket, name: str) -> None:
        if self._check_creds and not _peer_allowed(conn, name):
            conn.close()
            return
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn)
        except BaseException:
            conn.close()
            raise
        handler = ServerConnectionHandler(reader, writer, self._registry, name,
                                          max_in_flight=self._max_in_flight,
                                          on_activity=self._touch)
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = handler
        if self._closing:
            handler.begin_drain()
        await handler.run()


def _peer_allowed(conn: socket.socket, name: str) -> bool:
    """Go ttrpc's ``UnixSocketRequireSameUser``: the peer's uid and gid must equal ours."""
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except OSError as exc:
        log.warning("%s: cannot read peer credentials: %s", name, exc)
        return False
    pid, uid, gid = _PEERCRED.unpack(raw)
    if uid == os.geteuid() and gid == os.getegid():
        return True
    log.warning("%s: refusing peer pid=%d uid=%d gid=%d", name, pid, uid, gid)
    return False
