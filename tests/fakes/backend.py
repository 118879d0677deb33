"""A scripted backend for unit tests of the lifecycle core (never evidence that LXC works)."""

from __future__ import annotations

import asyncio

from runtime.errdefs import InvalidArgument, NotFound
from runtime.types import CreateConfig, ExecConfig


class FakeExec:
    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.sizes: list[tuple[int, int]] = []

    @property
    def pid(self) -> int:
        return self._pid

    def exit(self, status: int) -> None:
        if not self._exit.done():
            self._exit.set_result(status)

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def kill(self, signal: int) -> None:
        if self._exit.done():
            raise NotFound("exec: process already finished")
        self.exit(128 + signal)

    def resize(self, width: int, height: int) -> None:
        self.sizes.append((width, height))

    def close_stdin(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


class FakeHandle:
    def __init__(self, pid: int, exit_on_start: int | None = None) -> None:
        self._pid = pid
        self.exit_on_start = exit_on_start
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.started = False
        self.deleted = False
        self.signals: list[tuple[int, bool]] = []
        self.start_gate: asyncio.Event | None = None
        self.execs: dict[str, FakeExec] = {}

    @property
    def pid(self) -> int:
        return self._pid

    async def start(self) -> None:
        if self.exit_on_start is not None:
            # The early-exit race: the program dies before start() returns.
            self.exit(self.exit_on_start)
            await asyncio.sleep(0)
        if self.start_gate is not None:
            await self.start_gate.wait()
        self.started = True

    def exit(self, status: int) -> None:
        if not self._exit.done():
            self._exit.set_result(status)

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def kill(self, signal: int, all: bool = False) -> None:
        if self._exit.done():
            raise NotFound("process already finished")
        self.signals.append((signal, all))
        self.exit(128 + signal)

    def pids(self) -> list[int]:
        if self._exit.done():
            return []
        return [self._pid, self._pid + 1, *(e.pid for e in self.execs.values())]

    async def delete(self) -> None:
        self.deleted = True

    async def exec(self, config: ExecConfig) -> FakeExec:
        self.execs[config.exec_id] = FakeExec(self._pid + 100 + len(self.execs))
        return self.execs[config.exec_id]


class FakeBackend:
    name = "fake"

    def __init__(self) -> None:
        self.handles: dict[str, FakeHandle] = {}
        self.next_pid = 1000
        self.exit_on_start: int | None = None
        self.create_gate: asyncio.Event | None = None

    async def create(self, config: CreateConfig) -> FakeHandle:
        if config.spec.get("fail"):
            raise InvalidArgument("process.args: bad")
        if self.create_gate is not None:
            await self.create_gate.wait()
        self.next_pid += 10
        h = FakeHandle(self.next_pid, self.exit_on_start)
        self.handles[config.id] = h
        return h
