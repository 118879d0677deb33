"""The asyncio Server and Client over a real unix socket."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from google.protobuf import empty_pb2

from shim.ttrpc import Client, Code, ConnectionLost, RpcError, Server
from shim.ttrpc._frame import MAX_DATA, FrameHeader, encode_header
from tests.unit.ttrpc.conftest import (
    SERVICE,
    RawConn,
    Running,
    ServiceState,
    StringValue,
    start_server,
    stop_server,
)


@pytest.mark.asyncio
async def test_round_trip_with_metadata_and_deadline(running: Running, client: Client) -> None:
    reply = await client.call(SERVICE, "Echo", StringValue(value="hi"), StringValue,
                              timeout=30, metadata={"Containerd-Namespace-TTRPC": "default"})
    assert reply.value == "hi"
    [ctx] = running.state.contexts
    assert (ctx.service, ctx.method, ctx.stream_id) == (SERVICE, "Echo", 1)
    assert ctx.metadata == {"containerd-namespace-ttrpc": ["default"]}
    remaining = ctx.time_remaining()
    assert remaining is not None and 25 < remaining <= 30


@pytest.mark.asyncio
async def test_zero_length_success_response(running: Running, client: Client) -> None:
    assert await client.call(SERVICE, "Empty", empty_pb2.Empty(), empty_pb2.Empty) == (
        empty_pb2.Empty()
    )
    raw = await RawConn.open(running.path)
    try:
        await raw.send_request(1, "Empty")
        header, response = await raw.read_frame()
        assert header == FrameHeader(0, 1, 2, 0)
        assert not response.HasField("status")
    finally:
        await raw.close()


@pytest.mark.asyncio
async def test_unknown_service_and_method(client: Client) -> None:
    with pytest.raises(RpcError) as exc:
        await client.call("no.such.Service", "Echo", StringValue(), StringValue)
    assert (exc.value.code, exc.value.message) == (12, "service no.such.Service")
    with pytest.raises(RpcError) as exc:
        await client.call(SERVICE, "Nope", StringValue(), StringValue)
    assert (exc.value.code, exc.value.message) == (Code.UNIMPLEMENTED, "method Nope")


@pytest.mark.asyncio
async def test_slow_handler_does_not_delay_fast_one(running: Running, client: Client) -> None:
    slow = asyncio.create_task(client.call(SERVICE, "Slow", StringValue(value="1"), StringValue))
    await asyncio.wait_for(running.state.started.wait(), 5)
    fast = await asyncio.wait_for(
        client.call(SERVICE, "Echo", StringValue(value="2"), StringValue), 5
    )
    assert fast.value == "2"
    assert not slow.done()
    running.state.release.set()
    assert (await asyncio.wait_for(slow, 5)).value == "slow 1"
    assert running.state.order == ["echo:2", "slow:1"]


@pytest.mark.asyncio
async def test_responses_arrive_out_of_order_on_one_connection(running: Running) -> None:
    raw = await RawConn.open(running.path)
    try:
        await raw.send_request(1, "Slow", StringValue(value="a").SerializeToString())
        await asyncio.wait_for(running.state.started.wait(), 5)
        await raw.send_request(3, "Echo", StringValue(value="b").SerializeToString())
        header, response = await raw.read_frame()
        assert header.stream_id == 3
        assert StringValue.FromString(response.payload).value == "b"
        running.state.release.set()
        header, response = await raw.read_frame()
        assert header.stream_id == 1
        assert StringValue.FromString(response.payload).value == "slow a"
    finally:
        await raw.close()


@pytest.mark.asyncio
async def test_many_concurrent_calls_on_one_client(client: Client) -> None:
    values = [str(i) for i in range(200)]
    replies = await asyncio.gather(
        *(client.call(SERVICE, "Echo", StringValue(value=v), StringValue) for v in values)
    )
    assert [r.value for r in replies] == values


@pytest.mark.asyncio
async def test_timeout_nano_produces_deadline_exceeded(running: Running) -> None:
    raw = await RawConn.open(running.path)
    try:
        await raw.send_request(1, "Slow", StringValue(value="d").SerializeToString(),
                               timeout_ns=50_000_000)
        header, response = await raw.read_frame()
        assert header.stream_id == 1
        assert response.status.code == Code.DEADLINE_EXCEEDED
        assert response.payload == b""
        assert running.state.cancelled == ["d"]  # the handler was cancelled by the deadline
    finally:
        await raw.close()


@pytest.mark.asyncio
async def test_client_timeout_raises_deadline_exceeded(client: Client) -> None:
    with pytest.raises(RpcError) as exc:
        await client.call(SERVICE, "Slow", StringValue(value="t"), StringValue, timeout=0.05)
    assert exc.value.code == Code.DEADLINE_EXCEEDED
    # The connection is still usable afterwards, and the late answer is dropped.
    assert (await client.call(SERVICE, "Echo", StringValue(value="x"), StringValue)).value == "x"


@pytest.mark.asyncio
async def test_error_mapping(client: Client) -> None:
    cases = {
        "rpc": (Code.FAILED_PRECONDITION, "not running"),  # RpcError keeps its own code
        "key": (Code.NOT_FOUND, "abc: not found"),  # mapped by error_mapper
        "boom": (Code.UNKNOWN, "boom"),  # the mapper raised: Unknown with str(exc)
    }
    for value, expected in cases.items():
        with pytest.raises(RpcError) as exc:
            await client.call(SERVICE, "Fail", StringValue(value=value), StringValue)
        assert (exc.value.code, exc.value.message) == expected


@pytest.mark.asyncio
async def test_default_error_mapper_is_unknown(sock_dir: Path) -> None:
    run = await start_server(sock_dir / "d.sock", Server(), ServiceState())
    try:
        async with await Client.connect(run.path) as c:
            with pytest.raises(RpcError) as exc:
                await c.call(SERVICE, "Fail", StringValue(value="bad input"), StringValue)
            assert (exc.value.code, exc.value.message) == (Code.UNKNOWN, "bad input")
    finally:
        await stop_server(run)


@pytest.mark.asyncio
async def test_payload_decode_and_encode_failures_are_internal(running: Running) -> None:
    raw = await RawConn.open(running.path)
    try:
        await raw.send_request(1, "Echo", b"\x0a\xff\xff")
        _, response = await raw.read_frame()
        assert response.status.code == Code.INTERNAL
        await raw.send_request(3, "WrongType")
        _, response = await raw.read_frame()
        assert response.status.code == Code.INTERNAL
    finally:
        await raw.close()


@pytest.mark.asyncio
async def test_oversized_frame_answered_and_next_frame_served(running: Running) -> None:
    raw = await RawConn.open(running.path)
    try:
        length = MAX_DATA + 10
        await raw.send(encode_header(FrameHeader(length, 1, 1, 0)) + b"\x00" * length)
        await raw.send_request(3, "Echo", StringValue(value="after").SerializeToString())
        header, response = await raw.read_frame()
        assert header.stream_id == 1
        assert response.status.code == Code.RESOURCE_EXHAUSTED
        assert response.status.message == (
            f"message length {length} exceed maximum message size of 4194304"
        )
        header, response = await raw.read_frame()
        assert header.stream_id == 3
        assert StringValue.FromString(response.payload).value == "after"
    finally:
        await raw.close()


@pytest.mark.asyncio
async def test_garbage_closes_only_that_connection(running: Running, client: Client) -> None:
    raw = await RawConn.open(running.path)
    try:
        await raw.send(bytes(range(255, 0, -1)) * 4)
        assert await asyncio.wait_for(raw.reader.read(), 5) == b""  # EOF: server closed it
    finally:
        await raw.close()
    # An existing connection and a new one are both still served.
    assert (await client.call(SERVICE, "Echo", StringValue(value="1"), StringValue)).value == "1"
    async with await Client.connect(running.path) as second:
        reply = await second.call(SERVICE, "Echo", StringValue(value="2"), StringValue)
        assert reply.value == "2"


@pytest.mark.asyncio
async def test_handlers_cancelled_when_connection_closes(running: Running) -> None:
    c = await Client.connect(running.path)
    call = asyncio.create_task(c.call(SERVICE, "Slow", StringValue(value="gone"), StringValue))
    await asyncio.wait_for(running.state.started.wait(), 5)
    await c.close()
    with pytest.raises(ConnectionLost):
        await call
    for _ in range(100):
        if running.state.cancelled:
            break
        await asyncio.sleep(0.01)
    assert running.state.cancelled == ["gone"]


@pytest.mark.asyncio
async def test_connection_loss_fails_pending_calls(running: Running) -> None:
    c = await Client.connect(running.path)
    try:
        call = asyncio.create_task(c.call(SERVICE, "Slow", StringValue(value="p"), StringValue))
        await asyncio.wait_for(running.state.started.wait(), 5)
        running.server.close()
        with pytest.raises(ConnectionLost) as exc:
            await asyncio.wait_for(call, 5)
        assert isinstance(exc.value, ConnectionError)
        assert c.closed
        with pytest.raises(ConnectionLost):
            await c.call(SERVICE, "Echo", StringValue(), StringValue)
    finally:
        await c.close()


@pytest.mark.asyncio
async def test_graceful_shutdown_waits_for_in_flight(sock_dir: Path) -> None:
    state = ServiceState()
    run = await start_server(sock_dir / "g.sock", Server(), state)
    c = await Client.connect(run.path)
    idle = await Client.connect(run.path)
    try:
        call = asyncio.create_task(c.call(SERVICE, "Slow", StringValue(value="g"), StringValue))
        await asyncio.wait_for(state.started.wait(), 5)
        shutdown = asyncio.create_task(run.server.shutdown(grace=5))
        await asyncio.sleep(0.05)
        assert not shutdown.done()
        with pytest.raises(ConnectionLost):  # the idle connection was closed at once
            await asyncio.wait_for(idle.call(SERVICE, "Echo", StringValue(), StringValue), 5)
        with pytest.raises(OSError):  # no longer accepting
            await Client.connect(run.path)
        state.release.set()
        assert (await asyncio.wait_for(call, 5)).value == "slow g"
        await asyncio.wait_for(shutdown, 5)
        await asyncio.wait_for(run.task, 5)
    finally:
        await c.close()
        await idle.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.asyncio
async def test_shutdown_cancels_after_grace(sock_dir: Path) -> None:
    state = ServiceState()
    run = await start_server(sock_dir / "c.sock", Server(), state)
    c = await Client.connect(run.path)
    try:
        call = asyncio.create_task(c.call(SERVICE, "Slow", StringValue(value="late"), StringValue))
        await asyncio.wait_for(state.started.wait(), 5)
        await asyncio.wait_for(run.server.shutdown(grace=0.1), 5)
        assert state.cancelled == ["late"]
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(call, 5)
        await asyncio.wait_for(run.task, 5)
    finally:
        await c.close()


@pytest.mark.asyncio
async def test_cancelling_serve_cancels_connections(sock_dir: Path) -> None:
    state = ServiceState()
    run = await start_server(sock_dir / "x.sock", Server(), state)
    c = await Client.connect(run.path)
    try:
        call = asyncio.create_task(c.call(SERVICE, "Slow", StringValue(value="s"), StringValue))
        await asyncio.wait_for(state.started.wait(), 5)
        run.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run.task
        assert state.cancelled == ["s"]
        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(call, 5)
    finally:
        await c.close()


@pytest.mark.asyncio
async def test_peer_credentials(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = await start_server(sock_dir / "p.sock", Server(check_peer_credentials=True),
                             ServiceState())
    try:
        async with await Client.connect(run.path) as same_user:
            reply = await same_user.call(SERVICE, "Echo", StringValue(value="ok"), StringValue)
            assert reply.value == "ok"
        monkeypatch.setattr(os, "geteuid", lambda: 12345)
        async with await Client.connect(run.path) as other_user:
            with pytest.raises(ConnectionLost):
                await asyncio.wait_for(
                    other_user.call(SERVICE, "Echo", StringValue(), StringValue), 5
                )
    finally:
        await stop_server(run)


@pytest.mark.asyncio
async def test_register_twice_and_serve_twice(sock_dir: Path) -> None:
    run = await start_server(sock_dir / "t.sock", Server(), ServiceState())
    try:
        with pytest.raises(ValueError):
            run.server.register_service(SERVICE, {})
        with pytest.raises(RuntimeError):
            await run.server.serve(run.path)  # type: ignore[arg-type]
    finally:
        await stop_server(run)
