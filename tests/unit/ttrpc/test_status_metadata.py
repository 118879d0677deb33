"""Code numbering, RpcError, and metadata helpers (shim-protocol.md §1.6, §1.7)."""

from __future__ import annotations

import random

from shim.ttrpc import (
    ClientConnection,
    Code,
    ConnectionLost,
    RequestReceived,
    RpcError,
    ServerConnection,
    Status,
    TtrpcError,
)
from shim.ttrpc._frame import MAX_DATA, FrameHeader, MessageType, encode_frame, encode_header
from shim.ttrpc.metadata import metadata_pairs, metadata_to_dict


def test_code_numbering_matches_grpc() -> None:
    assert {code.name: int(code) for code in Code} == {
        "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
        "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
        "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
        "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
    }


def test_rpc_error() -> None:
    err = RpcError(5, "container x: not found")
    assert err.code is Code.NOT_FOUND
    assert err.message == "container x: not found"
    assert err.status == Status(5, "container x: not found")
    assert str(err) == "NOT_FOUND: container x: not found"
    assert isinstance(err, TtrpcError)
    odd = RpcError(99, "future code")
    assert odd.code == 99 and not isinstance(odd.code, Code)
    assert Status(0).ok and not Status(2).ok


def test_connection_lost_is_a_connection_error() -> None:
    assert issubclass(ConnectionLost, ConnectionError)
    assert issubclass(ConnectionLost, TtrpcError)


def test_metadata_pairs_and_dict() -> None:
    assert metadata_pairs(None) == ()
    assert metadata_pairs({"A": "1", "b": ["2", "3"]}) == (("a", "1"), ("b", "2"), ("b", "3"))
    assert metadata_pairs([("K", "v"), ("k", "w")]) == (("k", "v"), ("k", "w"))
    assert metadata_to_dict([("K", "v"), ("x", "1"), ("k", "w")]) == {
        "k": ["v", "w"], "x": ["1"],
    }


def test_random_chunkings_of_a_mixed_stream() -> None:
    """Seeded stand-in for hypothesis: many random chunkings give identical events."""
    client = ClientConnection()
    for i in range(20):
        client.send_request("svc", f"M{i}", bytes([i]) * i, i * 1000, {"k": str(i)})
    oversized = encode_header(FrameHeader(MAX_DATA + 5, 41, 1, 0)) + b"\x07" * (MAX_DATA + 5)
    stream = client.data_to_send() + encode_frame(1, MessageType.DATA, b"d") + oversized
    expected = ServerConnection().receive_data(stream)
    assert sum(isinstance(e, RequestReceived) for e in expected) == 20
    assert len(expected) == 22
    rng = random.Random(1234)
    for _ in range(30):
        server = ServerConnection()
        events = []
        pos = 0
        while pos < len(stream):
            step = rng.choice([1, 2, 3, 7, 10, 11, 64, 4096, 1 << 20])
            events += server.receive_data(stream[pos : pos + step])
            pos += step
        assert events == expected
