"""Resource limits of the asyncio Server: requests in flight per connection, answer bytes queued
for a peer that does not read, and connections served at once (issue 12, item 7).

Each test drives a real unix socket. "Not read" is observed from the flooding side: bytes it
wrote stay in its own transport buffer because the kernel's socket buffer is full.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from protos.ttrpc import request_pb2
from shim.ttrpc import Client, Method, RequestContext, Server
from shim.ttrpc._frame import HEADER_SIZE, decode_header, encode_frame
from tests.unit.ttrpc.conftest import StringValue, listen

LIMITS = "test.v1.Limits"


@dataclass
class Gate:
    """A handler that blocks until released and records how many ran at once."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    running: int = 0
    peak: int = 0
    calls: int = 0

    def methods(self) -> dict[str, Method[Any, Any]]:
        async def block(req: StringValue, ctx: RequestContext) -> StringValue:
            self.calls += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                await self.release.wait()
            finally:
                self.running -= 1
            return StringValue(value=req.value)

        async def echo(req: StringValue, ctx: RequestContext) -> StringValue:
            return StringValue(value=req.value)

        return {"Block": Method(StringValue, block), "Echo": Method(StringValue, echo)}


@dataclass
class Served:
    server: Server
    path: Path
    gate: Gate
    task: asyncio.Task[None]


@pytest_asyncio.fixture
async def make_server(sock_dir: Path) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    started: list[Served] = []

    async def make(**limits: int) -> Served:
        gate = Gate()
        server = Server(**limits)
        server.register_service(LIMITS, gate.methods())
        path = sock_dir / f"l{len(started)}.sock"
        task = asyncio.create_task(server.serve(listen(path)))
        served = Served(server, path, gate, task)
        started.append(served)
        return served

    yield make
    for served in started:
        served.gate.release.set()
        await served.server.shutdown(grace=1.0)
        await asyncio.wait_for(served.task, 5)


def request_frame(stream_id: int, method: str, value: str = "") -> bytes:
    payload = StringValue(value=value).SerializeToString()
    data = request_pb2.Request(service=LIMITS, method=method, payload=payload).SerializeToString()
    return encode_frame(stream_id, 1, data)


def flood(method: str, count: int, value: str = "") -> bytes:
    return b"".join(request_frame(2 * i + 1, method, value) for i in range(count))


async def poll(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
    assert predicate(), what


async def settle(path: Path, rounds: int = 20) -> None:
    """Let the server run: round trips on a connection of their own."""
    async with await Client.connect(path) as probe:
        for i in range(rounds):
            reply = await asyncio.wait_for(
                probe.call(LIMITS, "Echo", StringValue(value=str(i)), StringValue), 10)
            assert reply.value == str(i)


async def read_responses(reader: asyncio.StreamReader, count: int) -> set[int]:
    ids = set()
    for _ in range(count):
        header = decode_header(await asyncio.wait_for(reader.readexactly(HEADER_SIZE), 30))
        await asyncio.wait_for(reader.readexactly(header.length), 30)
        ids.add(header.stream_id)
    return ids


@pytest.mark.asyncio
async def test_pipelined_flood_is_capped_and_nothing_is_dropped(
        make_server: Callable[..., Awaitable[Served]]) -> None:
    served = await make_server(max_in_flight=8)
    count = 50_000
    reader, writer = await asyncio.open_unix_connection(str(served.path))
    try:
        writer.write(flood("Block", count, "x" * 40))
        await poll(lambda: served.gate.running == 8, "the cap is reached")
        # Another connection is served promptly while the flood is held back.
        await settle(served.path)
        assert served.gate.peak == 8
        assert served.server.requests_in_flight == 8
        # Backpressure: most of the flood is still in the flooding side's own buffer.
        assert writer.transport.get_write_buffer_size() > len(request_frame(1, "Block")) * 1000
        served.gate.release.set()
        ids = await read_responses(reader, count)
        assert ids == {2 * i + 1 for i in range(count)}  # every request answered once
        assert served.gate.peak == 8
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_peer_that_never_reads_stops_being_read(
        make_server: Callable[..., Awaitable[Served]]) -> None:
    served = await make_server()
    # 64 KiB answers that the peer never reads: beyond a bounded backlog the server stops
    # reading, so the flood stays with its sender instead of in the server's memory.
    value = "y" * 65536
    count = 2000  # 128 MiB of answers
    reader, writer = await asyncio.open_unix_connection(str(served.path))
    try:
        writer.write(flood("Echo", count, value))
        frame = len(request_frame(1, "Echo", value))
        await poll(lambda: writer.transport.get_write_buffer_size() < count * frame,
                   "the server started reading")
        await settle(served.path)
        left = writer.transport.get_write_buffer_size()
        await settle(served.path)
        assert writer.transport.get_write_buffer_size() == left  # no longer read
        assert left > (count - 200) * frame  # at most a few MiB were taken in
        # It reads again once the peer reads: every answer arrives.
        ids = await read_responses(reader, count)
        assert len(ids) == count
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_connections_beyond_the_cap_wait_to_be_accepted(
        make_server: Callable[..., Awaitable[Served]]) -> None:
    served = await make_server(max_connections=2)
    first = await Client.connect(served.path)
    second = await Client.connect(served.path)
    third = await Client.connect(served.path)  # connect() succeeds: it waits in the backlog
    try:
        for c in (first, second):
            assert (await c.call(LIMITS, "Echo", StringValue(value="a"), StringValue)).value == "a"
        late = asyncio.create_task(third.call(LIMITS, "Echo", StringValue(value="c"),
                                              StringValue))
        for _ in range(50):
            await asyncio.sleep(0.01)
        assert served.server.connections == 2
        assert not late.done()
        await first.close()
        assert (await asyncio.wait_for(late, 10)).value == "c"
        assert served.server.connections == 2
    finally:
        for c in (first, second, third):
            await c.close()


@pytest.mark.asyncio
async def test_activity_and_in_flight_are_reported(
        make_server: Callable[..., Awaitable[Served]]) -> None:
    served = await make_server()
    before = served.server.last_activity
    async with await Client.connect(served.path) as c:
        call = asyncio.create_task(c.call(LIMITS, "Block", StringValue(value="b"), StringValue))
        await poll(lambda: served.server.requests_in_flight == 1, "one request in flight")
        assert served.server.last_activity > before
        served.gate.release.set()
        await asyncio.wait_for(call, 5)
        assert served.server.requests_in_flight == 0


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Server(max_in_flight=0)
    with pytest.raises(ValueError):
        Server(max_connections=0)


@pytest.mark.asyncio
async def test_peer_that_hangs_up_at_the_cap_releases_its_handlers(
        make_server: Callable[..., Awaitable[Served]]) -> None:
    served = await make_server(max_in_flight=4)
    reader, writer = await asyncio.open_unix_connection(str(served.path))
    writer.write(flood("Block", 1000))
    await poll(lambda: served.gate.running == 4, "the cap is reached")
    await settle(served.path)
    await poll(lambda: served.server.connections == 1, "the probe's own connection has gone")
    # The flooder goes away with most of its flood still unread in the server's socket buffer:
    # its blocked handlers are cancelled and its connection closed, without any of them ending.
    writer.close()
    await poll(lambda: served.gate.running == 0, "the flood's handlers are cancelled")
    await poll(lambda: served.server.connections == 0, "the flood's connection is closed")
    assert served.gate.calls == 4
    assert not served.gate.release.is_set()
