"""The seeded malformed-frame corpus (tests/harness/ttrpc_fuzz.py) against the asyncio Server in
this process, where leaks show directly: afterwards no connection, request or asyncio task is
left, and the server still answers."""

from __future__ import annotations

import asyncio
from contextlib import suppress

import pytest

from shim.ttrpc import Client
from tests.harness import ttrpc_fuzz
from tests.unit.ttrpc.conftest import SERVICE, Running, StringValue

SEED = 1206
CASES = 600
TARGET = ttrpc_fuzz.Target(SERVICE, reading=("Echo", "Empty", "Fail", "WrongType"),
                           mutating=("Slow",),
                           valid=StringValue(value="v").SerializeToString())


async def run_case(running: Running, data: bytes) -> None:
    """Send ``data``, close our side, read until the server closes its side."""
    reader, writer = await asyncio.open_unix_connection(str(running.path))
    try:
        with suppress(ConnectionError):
            writer.write(data)
            writer.write_eof()
            await writer.drain()
        with suppress(ConnectionError):
            while await asyncio.wait_for(reader.read(65536), 10):
                pass
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.asyncio
async def test_corpus_leaves_nothing_behind(running: Running) -> None:
    for data in ttrpc_fuzz.corpus(SEED, CASES, TARGET):
        await run_case(running, data)
    async with asyncio.timeout(10):
        while running.server.connections:
            await asyncio.sleep(0.01)
    assert running.server.requests_in_flight == 0
    # Only the test itself, serve() and its accept loop are left: no reader, writer or handler.
    left = asyncio.all_tasks() - {asyncio.current_task(), running.task}
    assert [t.get_name() for t in left] == ["ttrpc-accept"], left
    assert running.state.cancelled == []  # no mutating call was ever decoded
    async with await Client.connect(running.path) as client:
        reply = await client.call(SERVICE, "Echo", StringValue(value="after"), StringValue)
        assert reply.value == "after"


def test_corpus_is_reproducible() -> None:
    assert ttrpc_fuzz.corpus(SEED, 50, TARGET) == ttrpc_fuzz.corpus(SEED, 50, TARGET)
