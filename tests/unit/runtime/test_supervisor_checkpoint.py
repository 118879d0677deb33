"""The Task API's Checkpoint in the lifecycle core: the container is frozen from before the
dump until after the snapshot, without pause events, and a task the client paused stays
paused."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from runtime import events as ev
from runtime.errdefs import FailedPrecondition
from runtime.store import Store
from runtime.supervisor import Supervisor
from runtime.types import CreateConfig, Status
from tests.fakes.backend import FakeBackend, FakeHandle

SPEC = {"ociVersion": "1.0.2",
        "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"}}


class PausableHandle(FakeHandle):
    def __init__(self, pid: int, log: list[str]) -> None:
        super().__init__(pid)
        self.log = log

    async def pause(self) -> None:
        self.log.append("pause")

    async def resume(self) -> None:
        self.log.append("resume")

    def kill(self, signal: int, all: bool = False) -> None:
        self.log.append(f"kill {signal}")
        super().kill(signal, all)


class PausingBackend(FakeBackend):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def create(self, config: CreateConfig) -> FakeHandle:
        plain = await super().create(config)
        handle = PausableHandle(plain.pid, self.log)
        self.handles[config.id] = handle
        return handle


class Checkpointer:
    name = "storage"

    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.log = log
        self.fail = fail

    async def prepare(self, config: CreateConfig) -> CreateConfig:
        return config

    async def release(self, config: CreateConfig) -> None:
        pass

    async def checkpoint(self, config: CreateConfig, pid: int | None, directory: Path, *,
                         leave_running: bool, target: Any = None) -> None:
        self.log.append(f"checkpoint pid={pid is not None} leave_running={leave_running}")
        if self.fail:
            raise FailedPrecondition("criu dump failed: no")


async def started(tmp_path: Path, fail: bool = False) -> tuple[Supervisor, list[str],
                                                                ev.MemorySink]:
    log: list[str] = []
    sink = ev.MemorySink()
    sup = Supervisor(PausingBackend(log), sink, Store(tmp_path), "ns",
                     provisioners=(Checkpointer(log, fail),))
    await sup.create(CreateConfig(id="c1", namespace="ns", bundle=Path("/b"), spec=SPEC))
    await sup.start("c1")
    return sup, log, sink


def pause_events(sink: ev.MemorySink) -> list[str]:
    return [type(e).__name__ for e in sink.events
            if isinstance(e, ev.TaskPaused | ev.TaskResumed)]


@pytest.mark.asyncio
async def test_checkpoint_freezes_around_the_dump_without_events(tmp_path: Path) -> None:
    sup, log, sink = await started(tmp_path)
    await sup.checkpoint("c1", tmp_path / "cp")
    assert log == ["pause", "checkpoint pid=True leave_running=True", "resume"]
    assert sup.state("c1").status is Status.RUNNING
    assert pause_events(sink) == []


@pytest.mark.asyncio
async def test_checkpoint_with_exit_kills_before_the_thaw(tmp_path: Path) -> None:
    sup, log, _ = await started(tmp_path)
    await sup.checkpoint("c1", tmp_path / "cp", exit=True)
    # Killed while still frozen, then thawed: a frozen task acts on SIGKILL only once thawed
    # on cgroup v1, so nothing runs between the snapshot and the kill.
    assert log == ["pause", "checkpoint pid=True leave_running=False",
                   f"kill {int(signal.SIGKILL)}", "resume"]
    assert (await sup.wait("c1")).status == 137


@pytest.mark.asyncio
async def test_a_failed_checkpoint_thaws_the_container(tmp_path: Path) -> None:
    sup, log, _ = await started(tmp_path, fail=True)
    with pytest.raises(FailedPrecondition, match="criu dump failed"):
        await sup.checkpoint("c1", tmp_path / "cp", exit=True)
    assert log == ["pause", "checkpoint pid=True leave_running=False", "resume"]
    assert sup.state("c1").status is Status.RUNNING


@pytest.mark.asyncio
async def test_a_task_the_client_paused_stays_paused(tmp_path: Path) -> None:
    sup, log, sink = await started(tmp_path)
    await sup.pause("c1")  # what ctr does before Checkpoint
    log.clear()
    await sup.checkpoint("c1", tmp_path / "cp")
    assert log == ["checkpoint pid=True leave_running=True"]
    assert sup.state("c1").status is Status.PAUSED
    assert pause_events(sink) == ["TaskPaused"]
