"""Frame header encode/decode and the chunk-agnostic FrameReader (shim-protocol.md §1.2, §1.9)."""

from __future__ import annotations

import pytest

from shim.ttrpc._frame import (
    HEADER_SIZE,
    MAX_DATA,
    Frame,
    FrameHeader,
    FrameReader,
    MessageType,
    OversizedFrame,
    decode_header,
    encode_frame,
    encode_header,
    oversize_message,
)
from shim.ttrpc.errors import LocalProtocolError, RemoteProtocolError

# §1.9 worked examples, as the hex text of the document.
CONNECT_REQUEST = bytes.fromhex(
    "00000029 00000001 01 00"
    "0a17" + b"containerd.task.v2.Task".hex()
    + "1207" + b"Connect".hex()
    + "1a050a03" + b"abc".hex()
)
CONNECT_RESPONSE = bytes.fromhex("00000008 00000001 02 00 1206 08d209 10ae2c")
EMPTY_RESPONSE = bytes.fromhex("00000000 00000005 02 00")
NOT_FOUND_RESPONSE = bytes.fromhex("00000026 00000003 02 00 0a24 0805 1220") + (
    b"container not created: not found"
)


def test_constants() -> None:
    assert HEADER_SIZE == 10
    assert MAX_DATA == 4194304
    assert [int(t) for t in MessageType] == [1, 2, 3]


@pytest.mark.parametrize(
    ("wire", "header"),
    [
        (CONNECT_REQUEST, FrameHeader(0x29, 1, MessageType.REQUEST, 0)),
        (CONNECT_RESPONSE, FrameHeader(8, 1, MessageType.RESPONSE, 0)),
        (EMPTY_RESPONSE, FrameHeader(0, 5, MessageType.RESPONSE, 0)),
        (NOT_FOUND_RESPONSE, FrameHeader(0x26, 3, MessageType.RESPONSE, 0)),
    ],
)
def test_worked_examples_headers(wire: bytes, header: FrameHeader) -> None:
    assert decode_header(wire) == header
    assert encode_header(header) == wire[:HEADER_SIZE]
    assert len(wire) == HEADER_SIZE + header.length
    assert encode_frame(header.stream_id, header.msg_type, wire[HEADER_SIZE:]) == wire


def test_header_is_big_endian_with_flags() -> None:
    header = FrameHeader(0x010203, 0x0A0B0C0D, 3, 0x05)
    raw = encode_header(header)
    assert raw == bytes([0, 1, 2, 3, 0x0A, 0x0B, 0x0C, 0x0D, 3, 5])
    assert decode_header(raw) == header


def test_decode_short_header_is_remote_error() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_header(b"\x00" * 9)


def test_encode_refuses_oversized_data_and_bad_fields() -> None:
    with pytest.raises(LocalProtocolError, match="exceed maximum message size of 4194304"):
        encode_frame(1, MessageType.REQUEST, b"\x00" * (MAX_DATA + 1))
    assert len(encode_frame(1, MessageType.REQUEST, b"\x00" * MAX_DATA)) == MAX_DATA + 10
    with pytest.raises(LocalProtocolError):
        encode_header(FrameHeader(0, 2**32, 1, 0))


STREAM = CONNECT_REQUEST + EMPTY_RESPONSE + NOT_FOUND_RESPONSE
EXPECTED = [
    Frame(decode_header(CONNECT_REQUEST), CONNECT_REQUEST[10:]),
    Frame(decode_header(EMPTY_RESPONSE), b""),
    Frame(decode_header(NOT_FOUND_RESPONSE), NOT_FOUND_RESPONSE[10:]),
]


def _feed_chunks(chunks: list[bytes]) -> list[Frame | OversizedFrame]:
    reader = FrameReader()
    out: list[Frame | OversizedFrame] = []
    for chunk in chunks:
        out.extend(reader.feed(chunk))
    assert reader.buffered == 0
    return out


def test_reader_whole_stream() -> None:
    assert _feed_chunks([STREAM]) == EXPECTED


def test_reader_every_two_way_split() -> None:
    for cut in range(len(STREAM) + 1):
        assert _feed_chunks([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


def test_reader_every_three_way_split() -> None:
    n = len(STREAM)
    for a in range(n + 1):
        for b in range(a, n + 1, 3):
            assert _feed_chunks([STREAM[:a], STREAM[a:b], STREAM[b:]]) == EXPECTED, (a, b)


def test_reader_byte_by_byte() -> None:
    assert _feed_chunks([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_reader_oversized_frame_is_skipped_exactly() -> None:
    length = MAX_DATA + 1
    big = encode_header(FrameHeader(length, 7, 1, 0)) + b"\xaa" * length
    stream = big + EMPTY_RESPONSE
    expected = [OversizedFrame(FrameHeader(length, 7, 1, 0)), EXPECTED[1]]
    assert _feed_chunks([stream]) == expected
    # Chunked so that a chunk ends inside the discarded data and the next frame straddles.
    chunks = [stream[:5], stream[5:12], stream[12 : 2 * 1024 * 1024], stream[2 * 1024 * 1024 : -3],
              stream[-3:]]
    assert _feed_chunks(chunks) == expected


def test_reader_does_not_buffer_discarded_bytes() -> None:
    reader = FrameReader()
    length = MAX_DATA + 100
    assert reader.feed(encode_header(FrameHeader(length, 1, 1, 0))) == [
        OversizedFrame(FrameHeader(length, 1, 1, 0))
    ]
    reader.feed(b"\x00" * MAX_DATA)
    assert reader.buffered == 0
    assert reader.feed(b"\x00" * 100 + EMPTY_RESPONSE) == [EXPECTED[1]]


def test_reader_reserved_byte_is_fatal_and_sticky() -> None:
    reader = FrameReader()
    with pytest.raises(RemoteProtocolError, match="reserved"):
        reader.feed(b"\x01" + b"\x00" * 9)
    with pytest.raises(RemoteProtocolError):
        reader.feed(EMPTY_RESPONSE)


def test_oversize_message_text() -> None:
    assert oversize_message(5000000) == (
        "message length 5000000 exceed maximum message size of 4194304"
    )
