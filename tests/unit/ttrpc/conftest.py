"""A real unix-socket ttrpc server with a small test service, and raw-socket helpers."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from google.protobuf import empty_pb2, wrappers_pb2

from protos.ttrpc import request_pb2
from shim.ttrpc import Client, Code, Method, RequestContext, RpcError, Server
from shim.ttrpc._frame import HEADER_SIZE, FrameHeader, decode_header, encode_frame

SERVICE = "test.v1.Echo"
StringValue = wrappers_pb2.StringValue


@dataclass
class ServiceState:
    """What the test service's handlers observe and wait on."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    contexts: list[RequestContext] = field(default_factory=list)


def build_methods(state: ServiceState) -> dict[str, Method[Any, Any]]:
    async def echo(req: StringValue, ctx: RequestContext) -> StringValue:
        state.contexts.append(ctx)
        state.order.append(f"echo:{req.value}")
        return StringValue(value=req.value)

    async def slow(req: StringValue, ctx: RequestContext) -> StringValue:
        state.started.set()
        try:
            await state.release.wait()
        except asyncio.CancelledError:
            state.cancelled.append(req.value)
            raise
        state.order.append(f"slow:{req.value}")
        return StringValue(value="slow " + req.value)

    async def empty(req: empty_pb2.Empty, ctx: RequestContext) -> empty_pb2.Empty:
        return empty_pb2.Empty()

    async def fail(req: StringValue, ctx: RequestContext) -> StringValue:
        if req.value == "rpc":
            raise RpcError(Code.FAILED_PRECONDITION, "not running")
        if req.value == "key":
            raise KeyError("abc")
        raise ValueError(req.value)

    async def wrong_type(req: StringValue, ctx: RequestContext) -> str:
        return "not a message"

    return {
        "Echo": Method(StringValue, echo),
        "Slow": Method(StringValue, slow),
        "Empty": Method(empty_pb2.Empty, empty),
        "Fail": Method(StringValue, fail),
        "WrongType": Method(StringValue, wrong_type),
    }


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 108-byte sun_path limit; keep socket paths short.
    path = Path(tempfile.mkdtemp(prefix="lxcri-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def listen(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(16)
    return sock


@dataclass
class Running:
    server: Server
    path: Path
    state: ServiceState
    task: asyncio.Task[None]


async def start_server(path: Path, server: Server, state: ServiceState) -> Running:
    server.register_service(SERVICE, build_methods(state))
    task = asyncio.create_task(server.serve(listen(path)))
    await asyncio.sleep(0)
    return Running(server, path, state, task)


async def stop_server(running: Running) -> None:
    await running.server.shutdown(grace=1.0)
    await asyncio.wait_for(running.task, 5)
    # No task may outlive the server: only the test's own task remains.
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest_asyncio.fixture
async def running(sock_dir: Path) -> AsyncIterator[Running]:
    def mapper(exc: BaseException) -> tuple[int, str]:
        if isinstance(exc, KeyError):
            return Code.NOT_FOUND, f"{exc.args[0]}: not found"
        raise RuntimeError("mapper gives up")  # -> Unknown with str(exc)

    run = await start_server(sock_dir / "s.sock", Server(error_mapper=mapper), ServiceState())
    try:
        yield run
    finally:
        run.state.release.set()
        await stop_server(run)


@pytest_asyncio.fixture
async def client(running: Running) -> AsyncIterator[Client]:
    c = await Client.connect(f"unix://{running.path}")
    try:
        yield c
    finally:
        await c.close()


class RawConn:
    """A hand-driven client connection for wire-level assertions."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: Path) -> RawConn:
        return cls(*await asyncio.open_unix_connection(str(path)))

    async def send_request(self, stream_id: int, method: str, payload: bytes = b"",
                           timeout_ns: int = 0, service: str = SERVICE) -> None:
        data = request_pb2.Request(service=service, method=method, payload=payload,
                                   timeout_nano=timeout_ns).SerializeToString()
        await self.send(encode_frame(stream_id, 1, data))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_frame(self) -> tuple[FrameHeader, request_pb2.Response]:
        header = decode_header(await asyncio.wait_for(self.reader.readexactly(HEADER_SIZE), 5))
        data = await asyncio.wait_for(self.reader.readexactly(header.length), 5)
        response = request_pb2.Response()
        response.ParseFromString(data)
        return header, response

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
