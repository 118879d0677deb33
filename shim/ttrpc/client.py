"""The asyncio ttrpc client: many concurrent unary calls multiplexed on one connection.

Used by the shim to publish events to containerd (``containerd.services.events.ttrpc.v1.Events``
/ ``Forward``, shim-protocol.md §4.1) and by tests. Behaviour copied from Go's ``client.go``
(shim-protocol.md §1.4, §1.5): odd increasing stream ids, the response payload is decoded
*before* the status is checked, an absent status or code 0 means success, and a response for a
stream nobody waits for any more is logged and dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from shim.ttrpc._connection import ClientConnection
from shim.ttrpc._events import Event, ResponseReceived, StreamError
from shim.ttrpc._service import DEADLINE_MESSAGE
from shim.ttrpc.errors import ConnectionLost, RemoteProtocolError
from shim.ttrpc.metadata import MetadataInput
from shim.ttrpc.status import Code, RpcError

__all__ = ["Client"]

log = logging.getLogger(__name__)

RespT = TypeVar("RespT", bound=ProtoMessage)

READ_SIZE = 64 * 1024
_UNIX_PREFIX = "unix://"


class Client:
    """One ttrpc connection. Create it with :meth:`connect`; close it with :meth:`close`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Wrap an open stream pair; prefer :meth:`connect`. Starts the reader task."""
        self._writer = writer
        self._core = ClientConnection()
        self._pending: dict[int, asyncio.Future[ResponseReceived]] = {}
        self._drain_lock = asyncio.Lock()
        self._lost: ConnectionLost | None = None
        self._reader_task = asyncio.create_task(self._read_loop(reader), name="ttrpc-client-read")

    @classmethod
    async def connect(cls, path: str | os.PathLike[str]) -> Client:
        """Connect to the unix socket ``path`` (an optional ``unix://`` prefix is stripped).

        Raises:
            OSError: the socket cannot be reached.
        """
        address = os.fspath(path)
        if address.startswith(_UNIX_PREFIX):
            address = address[len(_UNIX_PREFIX):]
        reader, writer = await asyncio.open_unix_connection(address)
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        """True once the connection is lost or closed; every call then raises."""
        return self._lost is not None

    async def call(
        self,
        service: str,
        method: str,
        request: ProtoMessage,
        response_class: type[RespT],
        timeout: float | None = None,
        metadata: MetadataInput | None = None,
    ) -> RespT:
        """Call ``/service/method`` and return the decoded ``response_class`` message.

        ``timeout`` (seconds) is sent as ``timeout_nano`` and also bounds the local wait.

        Raises:
            RpcError: the server answered a non-OK status, the response could not be decoded
                (Internal), or ``timeout`` elapsed (DeadlineExceeded).
            ConnectionLost: the connection was or got closed before the answer arrived.
        """
        timeout_ns = int(timeout * 1e9) if timeout is not None and timeout > 0 else 0
        response = await self._roundtrip(
            service, method, request.SerializeToString(), timeout_ns, metadata, timeout
        )
        return _result(response, response_class)

    async def _roundtrip(
        self, service: str, method: str, payload: bytes, timeout_ns: int,
        metadata: MetadataInput | None, timeout: float | None,
    ) -> ResponseReceived:
        if self._lost is not None:
            raise self._lost
        # Id allocation and the write happen with no await in between, so ids reach the wire
        # in increasing order even with many concurrent callers (§1.4).
        stream_id = self._core.send_request(service, method, payload, timeout_ns, metadata)
        future: asyncio.Future[ResponseReceived] = asyncio.get_running_loop().create_future()
        self._pending[stream_id] = future
        try:
            self._writer.write(self._core.data_to_send())
            async with asyncio.timeout(timeout):
                await self._drain()
                return await future
        except TimeoutError as exc:
            raise RpcError(Code.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from exc
        finally:
            # Forget the stream: a late answer is then logged and dropped (§1.4).
            self._pending.pop(stream_id, None)

    async def _drain(self) -> None:
        try:
            async with self._drain_lock:
                await self._writer.drain()
        except OSError as exc:
            self._fail(ConnectionLost(f"ttrpc connection lost while sending: {exc}"))
            raise self._lost_error() from exc

    def _lost_error(self) -> ConnectionLost:
        assert self._lost is not None
        return self._lost

    async def close(self) -> None:
        """Close the connection; pending calls fail with :class:`ConnectionLost`. Idempotent."""
        self._fail(ConnectionLost("ttrpc client closed"))
        self._reader_task.cancel()
        await asyncio.gather(self._reader_task, return_exceptions=True)
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _fail(self, error: ConnectionLost) -> None:
        """Mark the connection dead (first cause wins) and fail every pending call."""
        if self._lost is None:
            self._lost = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self._lost)
        self._pending.clear()

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(READ_SIZE)
                for event in self._core.receive_data(data):
                    self._on_event(event)
                if not data:
                    self._fail(ConnectionLost("ttrpc connection closed by the server"))
                    return
        except RemoteProtocolError as exc:
            self._fail(ConnectionLost(f"ttrpc protocol error: {exc}"))
            self._writer.close()
        except OSError as exc:
            self._fail(ConnectionLost(f"ttrpc connection lost: {exc}"))

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ResponseReceived | StreamError):
            future = self._pending.pop(event.stream_id, None)
            if future is None or future.done():
                log.debug("ttrpc: received message on inactive stream %d", event.stream_id)
            elif isinstance(event, StreamError):
                future.set_exception(RpcError(event.status.code, event.status.message))
            else:
                future.set_result(event)
        else:
            log.debug("ttrpc client: ignored %s", event)


def _result(response: ResponseReceived, response_class: type[RespT]) -> RespT:
    """Decode first, then check the status, exactly as the Go client does (§1.5)."""
    message = response_class()
    try:
        message.ParseFromString(response.payload)
    except DecodeError as exc:
        raise RpcError(Code.INTERNAL, f"failed to decode response: {exc}") from exc
    status = response.status
    if status is not None and not status.ok:
        raise RpcError(status.code, status.message)
    return message
