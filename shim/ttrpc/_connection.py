"""Sans-IO ttrpc connections: bytes in, events out; calls in, bytes out.

Shape taken from h2 (style-anchors.md §3.3, §3.4): ``receive_data(bytes) -> list[Event]`` and
``data_to_send() -> bytes``. Rules taken from Go ttrpc (shim-protocol.md §1). No asyncio, no
sockets: the transports in ``server.py`` and ``client.py`` move the bytes.

Error model:

* Per-stream problems (oversized frame, undecodable Request, bad stream id) are answered on
  that stream by the server core itself; the connection continues (§1.2, §1.4).
* A byte stream that cannot be resynchronised raises :class:`RemoteProtocolError` from
  ``receive_data``, and keeps raising it: the transport must close this connection.
* Misuse by our own code (answering a stream twice, oversized outgoing data, exhausted stream
  ids) raises :class:`LocalProtocolError`.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from protos.google.rpc import status_pb2
from protos.ttrpc import request_pb2
from shim.ttrpc._events import (
    ConnectionClosed,
    Event,
    FrameIgnored,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
    StreamError,
)
from shim.ttrpc._frame import (
    MAX_DATA,
    MAX_STREAM_ID,
    Flag,
    Frame,
    FrameReader,
    MessageType,
    OversizedFrame,
    encode_frame,
    oversize_message,
)
from shim.ttrpc.errors import LocalProtocolError
from shim.ttrpc.metadata import MetadataInput, metadata_pairs
from shim.ttrpc.status import Code, Status

__all__ = ["ClientConnection", "ServerConnection"]

_EVEN_ID = "StreamID cannot be even for a new stream"
_REUSED_ID = "StreamID cannot be re-used and must increment"


class _Connection:
    """State shared by both roles: the frame reader and the outbound buffer."""

    def __init__(self) -> None:
        self._reader = FrameReader()
        self._outbound = bytearray()

    @property
    def pending_bytes(self) -> int:
        """Bytes queued for the peer and not yet taken by :meth:`data_to_send`."""
        return len(self._outbound)

    def data_to_send(self) -> bytes:
        """Return and clear every byte queued for the peer (possibly ``b""``)."""
        data = bytes(self._outbound)
        self._outbound.clear()
        return data

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the peer; ``b""`` means EOF.

        Returns:
            The events completed by ``data``, in wire order.

        Raises:
            RemoteProtocolError: the stream cannot be resynchronised (sticky). Events decoded
                earlier in the same call are dropped: the connection is dead anyway.
        """
        if not data:
            return [ConnectionClosed(self._reader.buffered)]
        events: list[Event] = []
        for item in self._reader.feed(data):
            if isinstance(item, OversizedFrame):
                events.append(self._on_oversized(item))
            else:
                events.extend(self._on_frame(item))
        return events

    def _queue(self, stream_id: int, msg_type: MessageType, data: bytes) -> None:
        self._outbound += encode_frame(stream_id, msg_type, data)

    def _on_oversized(self, item: OversizedFrame) -> Event:
        raise NotImplementedError

    def _on_frame(self, frame: Frame) -> list[Event]:
        raise NotImplementedError


def _ignored(frame: Frame) -> FrameIgnored:
    h = frame.header
    return FrameIgnored(h.stream_id, h.msg_type, h.flags, h.length)


class ServerConnection(_Connection):
    """The accepting side of one connection.

    Enforces the ttrpc 1.2 stream rules (§1.4): request ids are odd and strictly increasing;
    a violation is answered InvalidArgument on that id. Non-request frames are ignored, as
    ttrpc 1.1 does (§1.3).
    """

    def __init__(self) -> None:
        super().__init__()
        self._last_stream_id = 0
        self._active: set[int] = set()

    @property
    def active_streams(self) -> frozenset[int]:
        """Streams whose Request was delivered and not yet answered (empty = idle)."""
        return frozenset(self._active)

    def send_response(
        self, stream_id: int, payload: bytes = b"", status: Status | None = None
    ) -> None:
        """Queue the Response for ``stream_id``.

        A success (``status`` None or code 0) omits the status, as Go does, so an ``Empty``
        result is a zero-length frame (§1.5). An error carries the status and no payload, so
        the payload can never mask the status on the client. A success payload too large for
        one frame is replaced by a ResourceExhausted answer so the caller is not left waiting.

        Raises:
            LocalProtocolError: ``stream_id`` is not awaiting a response, or an error status
                was given together with a payload.
        """
        if stream_id not in self._active:
            raise LocalProtocolError(f"stream {stream_id} is not awaiting a response")
        is_error = status is not None and not status.ok
        if is_error and payload:
            raise LocalProtocolError("an error response must not carry a payload")
        self._active.discard(stream_id)
        if is_error:
            assert status is not None
            self._queue_status(stream_id, status)
            return
        data = request_pb2.Response(payload=payload).SerializeToString()
        if len(data) > MAX_DATA:
            too_big = Status(Code.RESOURCE_EXHAUSTED, oversize_message(len(data)))
            self._queue_status(stream_id, too_big)
            return
        self._queue(stream_id, MessageType.RESPONSE, data)

    def _queue_status(self, stream_id: int, status: Status) -> None:
        pb = status_pb2.Status(code=status.code, message=status.message)
        data = request_pb2.Response(status=pb).SerializeToString()
        self._queue(stream_id, MessageType.RESPONSE, data)

    def _reject(self, stream_id: int, code: Code, message: str) -> RequestRejected:
        status = Status(code, message)
        self._queue_status(stream_id, status)
        return RequestRejected(stream_id, status)

    def _on_oversized(self, item: OversizedFrame) -> Event:
        h = item.header
        if h.msg_type != MessageType.REQUEST:
            return FrameIgnored(h.stream_id, h.msg_type, h.flags, h.length)
        return self._reject(h.stream_id, Code.RESOURCE_EXHAUSTED, oversize_message(h.length))

    def _on_frame(self, frame: Frame) -> list[Event]:
        if frame.header.msg_type != MessageType.REQUEST:
            return [_ignored(frame)]
        return [self._on_request(frame)]

    def _on_request(self, frame: Frame) -> Event:
        sid = frame.header.stream_id
        # §1.4: ttrpc 1.2 answers both violations InvalidArgument on the offending id.
        if sid % 2 == 0:
            return self._reject(sid, Code.INVALID_ARGUMENT, _EVEN_ID)
        if sid <= self._last_stream_id:
            return self._reject(sid, Code.INVALID_ARGUMENT, _REUSED_ID)
        self._last_stream_id = sid
        if frame.header.flags & Flag.REMOTE_OPEN:
            # §1.8: only unary methods are served; a client-streaming call is refused.
            return self._reject(sid, Code.UNIMPLEMENTED, "streaming requests are not supported")
        request = request_pb2.Request()
        try:
            request.ParseFromString(frame.data)
        except DecodeError as exc:
            return self._reject(sid, Code.INVALID_ARGUMENT, f"failed to decode request: {exc}")
        self._active.add(sid)
        pairs = tuple((kv.key, kv.value) for kv in request.metadata)
        return RequestReceived(
            sid, request.service, request.method, request.payload, request.timeout_nano, pairs
        )


class ClientConnection(_Connection):
    """The connecting side of one connection.

    Allocates odd, strictly increasing stream ids (1, 3, 5, ...) in the order requests are
    queued, so ids on the wire always increase (§1.4). It does not track which streams are
    still awaited; the transport owns that table and drops late responses.
    """

    def __init__(self) -> None:
        super().__init__()
        self._next_stream_id = 1

    def send_request(
        self,
        service: str,
        method: str,
        payload: bytes = b"",
        timeout_ns: int = 0,
        metadata: MetadataInput | None = (),
    ) -> int:
        """Queue a unary Request and return its new stream id.

        Raises:
            LocalProtocolError: the Request exceeds 4 MiB (no id is consumed), or the
                connection ran out of stream ids.
        """
        pairs = [request_pb2.KeyValue(key=k, value=v) for k, v in metadata_pairs(metadata)]
        data = request_pb2.Request(
            service=service, method=method, payload=payload,
            timeout_nano=timeout_ns, metadata=pairs,
        ).SerializeToString()
        if len(data) > MAX_DATA:
            raise LocalProtocolError(oversize_message(len(data)))
        stream_id = self._next_stream_id
        if stream_id > MAX_STREAM_ID:
            raise LocalProtocolError("stream ids exhausted on this connection")
        self._queue(stream_id, MessageType.REQUEST, data)
        self._next_stream_id += 2
        return stream_id

    def _on_oversized(self, item: OversizedFrame) -> Event:
        h = item.header
        return StreamError(h.stream_id, Status(Code.RESOURCE_EXHAUSTED, oversize_message(h.length)))

    def _on_frame(self, frame: Frame) -> list[Event]:
        sid = frame.header.stream_id
        if frame.header.msg_type == MessageType.REQUEST:
            return [_ignored(frame)]  # no server-initiated streams exist (§1.4)
        if frame.header.msg_type == MessageType.DATA:
            # §1.5: a Response of the wrong type fails the call with a protocol error.
            text = f"unexpected data message on unary stream {sid}"
            return [StreamError(sid, Status(Code.INTERNAL, text))]
        if frame.header.msg_type != MessageType.RESPONSE:
            return [_ignored(frame)]  # unknown types are skipped, as ttrpc 1.2 does (§1.3)
        response = request_pb2.Response()
        try:
            response.ParseFromString(frame.data)
        except DecodeError as exc:
            return [StreamError(sid, Status(Code.INTERNAL, f"failed to decode response: {exc}"))]
        status = None
        if response.HasField("status"):
            status = Status(response.status.code, response.status.message)
        return [ResponseReceived(sid, status, response.payload)]
