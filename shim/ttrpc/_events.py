"""Events produced by the sans-IO connections (style-anchors.md §3.4).

``ServerConnection.receive_data`` yields :class:`RequestReceived`, :class:`RequestRejected`,
:class:`FrameIgnored` and :class:`ConnectionClosed`; ``ClientConnection.receive_data`` yields
:class:`ResponseReceived`, :class:`StreamError`, :class:`FrameIgnored` and
:class:`ConnectionClosed`. Pure: stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass

from shim.ttrpc.status import Status

__all__ = [
    "ConnectionClosed",
    "Event",
    "FrameIgnored",
    "RequestReceived",
    "RequestRejected",
    "ResponseReceived",
    "StreamError",
]


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A decoded unary Request (§1.5). The server must answer it with ``send_response``.

    ``metadata`` keeps the wire order and the keys as sent; see :mod:`shim.ttrpc.metadata`.
    ``timeout_ns`` is the remaining deadline in nanoseconds, 0 meaning none.
    """

    stream_id: int
    service: str
    method: str
    payload: bytes
    timeout_ns: int = 0
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RequestRejected:
    """The server core answered ``stream_id`` with an error itself; nothing else to do.

    Emitted for an oversized frame (ResourceExhausted), an undecodable Request or a bad stream
    id (InvalidArgument), and a streaming request (Unimplemented). For logging.
    """

    stream_id: int
    status: Status


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A decoded Response. ``status`` is None when absent (the Go server's success form)."""

    stream_id: int
    status: Status | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class StreamError:
    """The call on ``stream_id`` failed before a usable Response arrived (client side).

    Causes: an oversized or undecodable Response, or a frame of the wrong type (§1.5).
    """

    stream_id: int
    status: Status


@dataclass(frozen=True, slots=True)
class FrameIgnored:
    """A frame this side does not handle, skipped as ttrpc 1.1 does (§1.3)."""

    stream_id: int
    msg_type: int
    flags: int
    length: int


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side (``receive_data(b"")``).

    ``unfinished_bytes`` counts bytes of a partial frame that will never complete.
    """

    unfinished_bytes: int = 0


Event = (
    RequestReceived
    | RequestRejected
    | ResponseReceived
    | StreamError
    | FrameIgnored
    | ConnectionClosed
)
