"""One process of a container (the init or an exec): its state, pid and exit.

State changes go through the table in :mod:`runtime.state`. ``start_settled`` is the asyncio
form of containerd's early-exit guard (runc shim ``preStart``/``handleStarted``): it is cleared
while a Start is in flight, and the exit path waits on it, so the start event is always queued
before the exit event of the same process even when the program dies instantly.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from runtime.errdefs import NotFound
from runtime.state import Op, next_state
from runtime.types import ExitStatus, Status, Stdio


@dataclass(frozen=True)
class ProcessState:
    """What the State RPC reports, answered from memory."""

    id: str
    exec_id: str
    bundle: str
    pid: int
    status: Status
    stdio: Stdio
    exit_status: int
    exited_at: float | None


class Process:
    def __init__(self, container_id: str, exec_id: str, stdio: Stdio) -> None:
        self.container_id = container_id
        self.exec_id = exec_id
        self.stdio = stdio
        self.pid = 0
        self.status = Status.CREATED
        self.started = False
        self.exit: ExitStatus | None = None
        self._exited = asyncio.Event()
        self.start_settled = asyncio.Event()
        self.start_settled.set()

    @property
    def name(self) -> str:
        return f"exec {self.exec_id}" if self.exec_id else f"container {self.container_id}"

    def check(self, op: Op) -> Status:
        """The state ``op`` would lead to; raises if ``op`` is not allowed now."""
        return next_state(self.status, op, self.name)

    def commit(self, op: Op) -> None:
        self.status = next_state(self.status, op, self.name)

    def set_exited(self, status: int, exited_at: float | None = None) -> ExitStatus:
        """Record the exit; the one transition that always wins from a live state."""
        if self.exit is None:
            self.exit = ExitStatus(self.pid, status, exited_at or time.time())
            if self.status is not Status.DELETED:
                self.status = Status.STOPPED
            self._exited.set()
        return self.exit

    def require_alive(self) -> None:
        if self.exit is not None or self.status in (Status.STOPPED, Status.DELETED):
            raise NotFound(f"{self.name}: process already finished")

    async def wait(self) -> ExitStatus:
        await self._exited.wait()
        assert self.exit is not None
        return self.exit

    def snapshot(self, bundle: str) -> ProcessState:
        return ProcessState(
            id=self.exec_id or self.container_id,
            exec_id=self.exec_id,
            bundle=bundle,
            pid=self.pid,
            status=self.status,
            stdio=self.stdio,
            exit_status=self.exit.status if self.exit else 0,
            exited_at=self.exit.exited_at if self.exit else None,
        )
