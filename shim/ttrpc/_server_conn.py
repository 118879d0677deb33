"""The asyncio side of one accepted server connection.

Go ttrpc's ``serverConn.run`` split into small parts (style-anchors.md §3.1):

* one reader task feeds bytes into the sans-IO :class:`ServerConnection`;
* every request runs in its own handler task, because containerd keeps ``Wait`` blocked on the
  same connection while it sends other calls (shim-protocol.md §1.4);
* one writer task drains the core's outbound buffer, so whole frames never interleave;
* a malformed stream or an I/O error ends this connection only; its handler tasks are
  cancelled and their responses are never sent.
"""

from __future__ import annotations

import asyncio
import logging
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


class ServerConnectionHandler:
    """Serves one connection until EOF, an error, :meth:`close` or a graceful drain."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        registry: ServiceRegistry,
        name: str = "ttrpc",
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._registry = registry
        self._name = name
        self._core = ServerConnection()
        self._handlers: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._draining = False

    @property
    def idle(self) -> bool:
        """True when no request is being handled."""
        return not self._handlers

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

    async def _read_loop(self) -> None:
        while True:
            data = await self._reader.read(READ_SIZE)
            for event in self._core.receive_data(data):
                self._on_event(event)
            self._wakeup.set()  # rejects may have queued bytes
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

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
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
            if self._draining and not self._handlers:
                return
