"""The asyncio side of one accepted server connection.

Go ttrpc's ``serverConn.run`` split into small parts (style-anchors.md §3.1):

* one reader task feeds bytes into the sans-IO :class:`ServerConnection`;
* every request runs in its own handler task, because containerd keeps ``Wait`` blocked on the
  same connection while it sends other calls (shim-protocol.md §1.4);
* at most ``max_in_flight`` handlers run at once, and the reader stops reading the socket while
  that many run or while too many answer bytes wait for the peer (backpressure: the kernel's
  socket buffer fills and the peer's writes block; nothing is dropped). Without the cap one
  connection that pipelined 200,000 ``Wait`` calls grew a shim from 20 MB to 957 MB (issue 12);
* one writer task drains the core's outbound buffer, so whole frames never interleave;
* a malformed stream or an I/O error ends this connection only; its handler tasks are
  cancelled and their responses are never sent;
* while reading is paused the peer's hang-up is still seen (EPOLLRDHUP): a client that flooded
  the cap and went away would otherwise keep its 1024 handlers and its descriptor until every one
  of them ended, which for blocked ``Wait`` calls is the task's exit.
"""

from __future__ import annotations

import asyncio
import logging
import select
from collections.abc import Callable
from contextlib import suppress

from shim.ttrpc._connection import ServerConnection
from shim.ttrpc._events import (
    ConnectionClosed,
    Event,
    FrameIgnored,
    RequestReceived,
    RequestRejected,
)
from shim.ttrpc._service import ServiceRegistry
from shim.ttrpc.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["ServerConnectionHandler"]

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024

#: Requests one connection may have in flight before its socket is no longer read. containerd
#: holds one connection per task (shim-protocol.md §1.4) and sends a handful of calls at a time,
#: plus one blocked ``Wait`` per containerd API client waiting on the task or one of its execs
#: (containerd forwards each API ``Wait`` as its own shim ``Wait``). 1024 leaves a wide margin over
#: that while bounding a connection's handler tasks to a few MB. At the cap a ``Kill`` behind 1024
#: blocked Waits is not read until one of them ends: a client that needs more must open another
#: connection.
MAX_IN_FLIGHT = 1024

#: Answer bytes queued for one connection (ours plus the transport's buffer) above which its
#: socket is no longer read: a peer that sends but never reads cannot make us buffer its answers
#: without end. A single answer may exceed it (up to 4 MiB, §1.2); reading resumes once written.
MAX_OUTBOUND = 1024 * 1024


class PeerHungUp(Exception):
    """The peer closed its side while this connection was not being read."""


class ServerConnectionHandler:
    """Serves one connection until EOF, an error, :meth:`close` or a graceful drain."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        registry: ServiceRegistry,
        name: str = "ttrpc",
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
        on_activity: Callable[[], None] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self._reader = reader
        self._writer = writer
        self._registry = registry
        self._name = name
        self._max_in_flight = max_in_flight
        self._on_activity = on_activity
        self._core = ServerConnection()
        self._handlers: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()  # the writer has something to do
        self._progress = asyncio.Event()  # a handler ended or the writer drained
        self._draining = False
        self._paused = False

    @property
    def idle(self) -> bool:
        """True when no request is being handled."""
        return not self._handlers

    @property
    def in_flight(self) -> int:
        """Requests being handled on this connection now."""
        return len(self._handlers)

    def begin_drain(self) -> None:
        """Close this connection as soon as it is idle and its responses are written.

        Requests that still arrive meanwhile are served: a blocked ``Wait`` may need a
        ``Kill`` on the same connection to finish (shim-protocol.md §1.4).
        """
        self._draining = True
        self._wakeup.set()

    async def run(self) -> None:
        """Serve until the connection ends; never raises except on cancellation."""
        read = asyncio.create_task(self._read_loop(), name=f"{self._name}-read")
        write = asyncio.create_task(self._write_loop(), name=f"{self._name}-write")
        try:
            await asyncio.wait({read, write}, return_when=asyncio.FIRST_COMPLETED)
            for task in (read, write):
                if task.done() and not task.cancelled():
                    self._log_end(task.exception())
        finally:
            await self._teardown(read, write)

    def _log_end(self, exc: BaseException | None) -> None:
        if exc is None:
            log.debug("%s: connection finished", self._name)
        elif isinstance(exc, PeerHungUp):
            log.info("%s", exc)
        elif isinstance(exc, RemoteProtocolError):
            log.warning("%s: closing connection: %s", self._name, exc)
        elif isinstance(exc, OSError):
            log.info("%s: connection error: %s", self._name, exc)
        else:
            log.error("%s: connection failed", self._name, exc_info=exc)

    async def _teardown(self, *tasks: asyncio.Task[None]) -> None:
        pending = [*tasks, *self._handlers]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._writer.close()
        with suppress(OSError):
            await self._writer.wait_closed()

    def _outbound(self) -> int:
        """Answer bytes not yet handed to the kernel: the core's buffer and the transport's."""
        return self._core.pending_bytes + self._writer.transport.get_write_buffer_size()

    def _slot_free(self) -> bool:
        return len(self._handlers) < self._max_in_flight

    def _may_read(self) -> bool:
        return self._slot_free() and self._outbound() <= MAX_OUTBOUND

    async def _until(self, ready: Callable[[], bool]) -> None:
        """Wait until ``ready()``; re-checked whenever a handler ends or the writer drains.

        Raises :class:`PeerHungUp` when the peer closes meanwhile: unread bytes then stay in
        our receive buffer, so the end of the stream would never be read.
        """
        if ready():
            return
        if not self._paused:
            self._paused = True
            log.info("%s: %d requests in flight, %d answer bytes queued: not reading until "
                     "some finish", self._name, len(self._handlers), self._outbound())
        hangup = asyncio.create_task(self._hangup(), name=f"{self._name}-hangup")
        try:
            while not ready():
                self._progress.clear()
                progress = asyncio.create_task(self._progress.wait())
                try:
                    await asyncio.wait({progress, hangup}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    progress.cancel()
                if hangup.done() and hangup.result():
                    raise PeerHungUp(f"{self._name}: peer hung up while reading was paused")
        finally:
            hangup.cancel()
            with suppress(asyncio.CancelledError):
                await hangup

    async def _hangup(self) -> bool:
        """Return True once the peer has closed or shut down its side of the socket.

        A private epoll set watching only EPOLLRDHUP (HUP and ERR are always reported): the
        socket itself stays readable while bytes are pending, so the loop's own reader cannot
        tell. Linux's unix_poll() and tcp_poll() both report RDHUP once the peer has shut down
        writing (epoll(7), net/unix/af_unix.c). Returns False, never, for a transport without a
        socket.
        """
        sock = self._writer.get_extra_info("socket")
        if sock is None:
            await asyncio.Event().wait()  # cancelled by the caller
            return False
        loop = asyncio.get_running_loop()
        hung_up: asyncio.Future[bool] = loop.create_future()

        def ready() -> None:
            if not hung_up.done():
                hung_up.set_result(True)

        with select.epoll(1) as ep:
            ep.register(sock.fileno(), select.EPOLLRDHUP)
            loop.add_reader(ep.fileno(), ready)
            try:
                return await hung_up
            finally:
                loop.remove_reader(ep.fileno())

    async def _read_loop(self) -> None:
        while True:
            await self._until(self._may_read)
            data = await self._reader.read(READ_SIZE)
            events = self._core.receive_data(data)
            self._wakeup.set()  # rejects may have queued bytes
            for event in events:
                if isinstance(event, RequestReceived):
                    # One read may hold many small requests: start them one slot at a time.
                    await self._until(self._slot_free)
                self._on_event(event)
            if not data:
                return

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self._spawn(event)
        elif isinstance(event, RequestRejected):
            log.warning("%s: stream %d rejected: %s", self._name, event.stream_id, event.status)
        elif isinstance(event, FrameIgnored):
            log.debug("%s: ignored frame %s", self._name, event)
        elif isinstance(event, ConnectionClosed):
            log.debug("%s: peer closed the connection", self._name)

    def _spawn(self, event: RequestReceived) -> None:
        task = asyncio.create_task(
            self._handle(event), name=f"{self._name}-{event.service}/{event.method}"
        )
        self._handlers.add(task)
        task.add_done_callback(self._handler_done)
        if self._on_activity is not None:
            self._on_activity()

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        self._progress.set()
        if self._on_activity is not None:
            self._on_activity()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: handler task failed", self._name, exc_info=task.exception())
        if self._draining:
            self._wakeup.set()

    async def _handle(self, event: RequestReceived) -> None:
        log.debug("%s: /%s/%s on stream %d", self._name, event.service, event.method,
                  event.stream_id)
        payload, status = await self._registry.dispatch(event)
        try:
            self._core.send_response(event.stream_id, payload, status)
        except LocalProtocolError:
            log.exception("%s: cannot answer stream %d", self._name, event.stream_id)
        self._wakeup.set()

    async def _write_loop(self) -> None:
        # The only coroutine that writes to the transport: responses are queued whole in the
        # core's buffer and leave in one write, so frames never interleave (§1.4). A response
        # the client stopped waiting for is written like any other and dropped by the peer.
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            data = self._core.data_to_send()
            if data:
                self._writer.write(data)
                await self._writer.drain()
                self._progress.set()
            if self._draining and not self._handlers:
                return
