"""ttrpc framing: the 10-byte header and a chunk-boundary agnostic frame reader.

Wire facts (shim-protocol.md §1.2, §1.3): every message is a big-endian header
``u32 length | u32 stream id | u8 type | u8 flags`` followed by ``length`` bytes of data, with
``length`` at most 4 MiB. Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from shim.ttrpc.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "HEADER_SIZE",
    "MAX_DATA",
    "MAX_STREAM_ID",
    "Flag",
    "Frame",
    "FrameHeader",
    "FrameReader",
    "MessageType",
    "OversizedFrame",
    "decode_header",
    "encode_frame",
    "encode_header",
    "oversize_message",
]

_HEADER = struct.Struct(">IIBB")
HEADER_SIZE = _HEADER.size  # 10
MAX_DATA = 4 * 1024 * 1024  # 4194304, shim-protocol.md §1.2
MAX_STREAM_ID = 0xFFFFFFFF

# §1.2: because MAX_DATA < 16 MiB the first header byte is always 0 ("reserved"). A frame whose
# length has a non-zero top byte cannot come from a conforming peer, and honouring it (discarding
# up to 4 GiB) would wedge the connection; we treat it as an unrecoverable framing error instead.
_RESERVED_MASK = 0xFF000000


class MessageType(IntEnum):
    """Frame message types (§1.3)."""

    REQUEST = 0x01
    RESPONSE = 0x02
    DATA = 0x03


class Flag(IntFlag):
    """Frame flags (§1.3); unary calls always send 0."""

    REMOTE_CLOSED = 0x01
    REMOTE_OPEN = 0x02
    NO_DATA = 0x04


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """A decoded header. ``msg_type`` is an int: unknown types must be ignored, not rejected."""

    length: int
    stream_id: int
    msg_type: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete frame: header plus exactly ``header.length`` bytes of data."""

    header: FrameHeader
    data: bytes


@dataclass(frozen=True, slots=True)
class OversizedFrame:
    """A header announcing more than :data:`MAX_DATA` bytes; its data is being discarded."""

    header: FrameHeader


def oversize_message(length: int) -> str:
    """The ResourceExhausted text Go ttrpc uses for an oversized message (§1.2)."""
    return f"message length {length} exceed maximum message size of {MAX_DATA}"


def encode_header(header: FrameHeader) -> bytes:
    """Pack ``header`` into its 10 wire bytes.

    Raises:
        LocalProtocolError: a field does not fit its wire width.
    """
    try:
        return _HEADER.pack(header.length, header.stream_id, header.msg_type, header.flags)
    except struct.error as exc:
        raise LocalProtocolError(f"cannot encode frame header {header}: {exc}") from exc


def decode_header(data: bytes | bytearray | memoryview) -> FrameHeader:
    """Unpack the first :data:`HEADER_SIZE` bytes of ``data``.

    Raises:
        RemoteProtocolError: fewer than 10 bytes were given.
    """
    if len(data) < HEADER_SIZE:
        raise RemoteProtocolError(f"short frame header: {len(data)} bytes")
    length, stream_id, msg_type, flags = _HEADER.unpack_from(data)
    return FrameHeader(length, stream_id, msg_type, flags)


def encode_frame(stream_id: int, msg_type: int, data: bytes, flags: int = 0) -> bytes:
    """Return header + data for one frame.

    Raises:
        LocalProtocolError: ``data`` exceeds :data:`MAX_DATA` (a sender refuses, §1.2) or a
            header field is out of range.
    """
    if len(data) > MAX_DATA:
        raise LocalProtocolError(oversize_message(len(data)))
    return encode_header(FrameHeader(len(data), stream_id, msg_type, flags)) + data


class FrameReader:
    """Reassembles frames from arbitrarily split or joined chunks of a byte stream.

    The sequence of items returned across all :meth:`feed` calls depends only on the
    concatenated bytes, never on how they were chunked.
    """

    def __init__(self, max_data: int = MAX_DATA) -> None:
        self._max_data = max_data
        self._buf = bytearray()
        self._discard = 0  # bytes of an oversized frame still to drop
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (0 at a frame boundary)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | OversizedFrame]:
        """Consume ``data``; return every frame it completes, in order.

        An oversized frame is reported as soon as its header is complete; exactly
        ``length`` following bytes are then dropped without being buffered.

        Raises:
            RemoteProtocolError: a header's reserved byte is non-zero. Sticky: every later
                call raises the same error.
        """
        if self._error is not None:
            raise self._error
        self._buf += data
        out: list[Frame | OversizedFrame] = []
        while self._step(out):
            pass
        return out

    def _step(self, out: list[Frame | OversizedFrame]) -> bool:
        """Decode at most one item from the buffer; return False when more bytes are needed."""
        if self._discard:
            n = min(self._discard, len(self._buf))
            del self._buf[:n]
            self._discard -= n
            return self._discard == 0 and bool(self._buf)
        if len(self._buf) < HEADER_SIZE:
            return False
        header = decode_header(self._buf)
        if header.length & _RESERVED_MASK:
            self._error = RemoteProtocolError(
                f"invalid frame header (reserved byte set, length {header.length})"
            )
            raise self._error
        if header.length > self._max_data:
            del self._buf[:HEADER_SIZE]
            self._discard = header.length
            out.append(OversizedFrame(header))
            return True
        end = HEADER_SIZE + header.length
        if len(self._buf) < end:
            return False
        out.append(Frame(header, bytes(self._buf[HEADER_SIZE:end])))
        del self._buf[:end]
        return True
