"""A seeded corpus of malformed ttrpc byte streams, one per connection (issue 12).

Each case is what a broken or hostile client might write on a fresh connection: random bytes,
truncated, oversized and reserved-byte headers (shim-protocol.md §1.2), bad stream ids (§1.4),
unknown services and methods, Requests that are not protobuf, payloads that do not decode,
unknown message types and flags (§1.3), and pipelined calls. The same seed gives the same cases.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from protos.ttrpc import request_pb2
from shim.ttrpc._frame import MAX_DATA, encode_frame


def header(length: int, stream_id: int, msg_type: int, flags: int = 0) -> bytes:
    return struct.pack(">IIBB", length, stream_id, msg_type, flags)


def request(stream_id: int, service: str, method: str, payload: bytes = b"") -> bytes:
    data = request_pb2.Request(service=service, method=method,
                               payload=payload).SerializeToString()
    return encode_frame(stream_id, 1, data)


def undecodable(rng: random.Random) -> bytes:
    """A length-delimited field 1 announcing more bytes than follow: never decodes."""
    body = rng.randbytes(rng.randrange(0, 40))
    return b"\x0a" + bytes([len(body) + 1 + rng.randrange(0, 100)]) + body


@dataclass(frozen=True)
class Target:
    """The service under test.

    Attributes:
        service: its name.
        reading: methods that may get arbitrary payload bytes.
        mutating: methods that only get undecodable payloads (an arbitrary payload that
            happened to decode could create, kill or shut down for real).
        valid: the payload of a harmless valid call to ``reading[0]``.
    """

    service: str
    reading: Sequence[str]
    mutating: Sequence[str]
    valid: bytes = b""


def case(rng: random.Random, target: Target) -> bytes:
    """One malformed stream for a fresh connection."""
    kind = rng.randrange(12)
    svc = target.service
    if kind == 0:  # random bytes
        return rng.randbytes(rng.randrange(0, 300))
    if kind == 1:  # a truncated header
        return header(rng.randrange(0, 100), 1, 1)[: rng.randrange(1, 10)]
    if kind == 2:  # reserved byte set: the stream cannot be resynchronised
        return header(rng.randrange(1 << 24, 1 << 32), 1, 1) + rng.randbytes(20)
    if kind == 3:  # oversized, with part of its data
        return header(rng.randrange(MAX_DATA + 1, 1 << 24), 1, 1) + rng.randbytes(
            rng.randrange(0, 4096))
    if kind == 4:  # a header announcing more than follows
        return header(rng.randrange(50, 5000), 1, 1) + rng.randbytes(rng.randrange(0, 40))
    if kind == 5:  # bad stream ids: zero, even, repeated, decreasing
        ids = rng.choice([[0], [2], [1, 1], [5, 3], [0xFFFFFFFF, 1]])
        return b"".join(request(i, svc, target.reading[0], target.valid) for i in ids)
    if kind == 6:  # unknown service or method
        service = rng.choice([svc, "no.such.Service", "", "\u00e9" * 30, svc + "x"])
        return request(1, service, rng.choice(["Nope", "", target.reading[0] + "\x00", "a" * 500]))
    if kind == 7:  # a Request that is not protobuf
        return encode_frame(1, 1, rng.randbytes(rng.randrange(1, 200)))
    if kind == 8:  # garbage payload for a reading method
        return request(1, svc, rng.choice(target.reading), rng.randbytes(rng.randrange(0, 200)))
    if kind == 9:  # undecodable payload for a mutating method
        return request(1, svc, rng.choice(target.mutating), undecodable(rng))
    if kind == 10:  # unknown message types and flags, then a valid call
        t = rng.choice([0, 2, 3, 4, 0xFF])
        return (encode_frame(1, t, rng.randbytes(rng.randrange(0, 30)), rng.randrange(256))
                + request(3, svc, target.reading[0], target.valid))
    # many calls with garbage payloads, pipelined
    return b"".join(request(2 * i + 1, svc, rng.choice(target.reading),
                            rng.randbytes(rng.randrange(0, 20)))
                    for i in range(rng.randrange(1, 50)))


def corpus(seed: int, count: int, target: Target) -> list[bytes]:
    rng = random.Random(seed)
    return [case(rng, target) for _ in range(count)]
