"""The lifecycle core against a scripted backend: event order, states and error classes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime import events as ev
from runtime.errdefs import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from runtime.store import Store
from runtime.supervisor import Supervisor
from runtime.types import CreateConfig, Status
from tests.fakes.backend import FakeBackend

SPEC = {"ociVersion": "1.0.2",
        "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"}}


def make(tmp_path: Path) -> tuple[Supervisor, FakeBackend, ev.MemorySink]:
    backend = FakeBackend()
    sink = ev.MemorySink()
    return Supervisor(backend, sink, Store(tmp_path), "ns"), backend, sink


def cfg(id: str, **spec: object) -> CreateConfig:
    return CreateConfig(id=id, namespace="ns", bundle=Path("/b") / id, spec={**SPEC, **spec})


def topics(sink: ev.MemorySink) -> list[str]:
    return [type(e).__name__ for e in sink.events]


@pytest.mark.asyncio
async def test_full_lifecycle_publishes_in_contract_order(tmp_path: Path) -> None:
    sup, backend, sink = make(tmp_path)
    pid = await sup.create(cfg("c1"))
    assert sup.state("c1").status is Status.CREATED
    assert (tmp_path / "containers/ns/c1/state.json").exists()
    assert await sup.start("c1") == pid
    assert sup.state("c1").status is Status.RUNNING
    backend.handles["c1"].exit(7)
    ex = await sup.wait("c1")
    assert ex.status == 7 and ex.pid == pid
    assert sup.state("c1").status is Status.STOPPED
    deleted = await sup.delete("c1")
    assert deleted.status == 7
    assert topics(sink) == ["TaskCreated", "TaskStarted", "ProcessExited", "TaskDeleted"]
    assert not (tmp_path / "containers/ns/c1").exists()
    with pytest.raises(NotFound):
        sup.state("c1")


@pytest.mark.asyncio
async def test_exit_during_start_is_published_after_start(tmp_path: Path) -> None:
    sup, backend, sink = make(tmp_path)
    backend.exit_on_start = 3
    await sup.create(cfg("c1"))
    await sup.start("c1")
    assert (await sup.wait("c1")).status == 3
    await asyncio.sleep(0)
    assert topics(sink) == ["TaskCreated", "TaskStarted", "ProcessExited"]


@pytest.mark.asyncio
async def test_kill_after_exit_is_not_found(tmp_path: Path) -> None:
    sup, backend, _ = make(tmp_path)
    await sup.create(cfg("c1"))
    await sup.start("c1")
    sup.kill("c1", "", 9)
    assert (await sup.wait("c1")).status == 137
    with pytest.raises(NotFound, match="process already finished"):
        sup.kill("c1", "", 9)


@pytest.mark.asyncio
async def test_delete_running_is_failed_precondition(tmp_path: Path) -> None:
    sup, _, _ = make(tmp_path)
    await sup.create(cfg("c1"))
    await sup.start("c1")
    with pytest.raises(FailedPrecondition, match="state running"):
        await sup.delete("c1")


@pytest.mark.asyncio
async def test_delete_created_kills_the_held_init_without_exit_event(tmp_path: Path) -> None:
    sup, backend, sink = make(tmp_path)
    await sup.create(cfg("c1"))
    ex = await sup.delete("c1")
    assert ex.status == 137
    assert backend.handles["c1"].signals == [(9, True)]
    assert backend.handles["c1"].deleted
    assert topics(sink) == ["TaskCreated", "TaskDeleted"]


@pytest.mark.asyncio
async def test_duplicate_create_during_slow_create(tmp_path: Path) -> None:
    sup, backend, _ = make(tmp_path)
    backend.create_gate = asyncio.Event()
    first = asyncio.create_task(sup.create(cfg("c1")))
    await asyncio.sleep(0)
    with pytest.raises(AlreadyExists):
        await sup.create(cfg("c1"))
    # State of the reserved id is not answerable yet, and never blocks.
    with pytest.raises(NotFound):
        sup.state("c1")
    backend.create_gate.set()
    await first


@pytest.mark.asyncio
async def test_failed_create_leaves_nothing(tmp_path: Path) -> None:
    sup, _, sink = make(tmp_path)
    with pytest.raises(InvalidArgument):
        await sup.create(cfg("c1", fail=True))
    assert sup.ids() == [] and sink.events == []
    assert not (tmp_path / "containers/ns/c1").exists()


@pytest.mark.asyncio
async def test_unknown_ids_and_execs_are_not_found(tmp_path: Path) -> None:
    sup, _, _ = make(tmp_path)
    with pytest.raises(NotFound, match="container nope not created"):
        await sup.start("nope")
    await sup.create(cfg("c1"))
    with pytest.raises(NotFound, match="exec e1"):
        sup.state("c1", "e1")
    assert sup.task_pid("nope") == 0


@pytest.mark.asyncio
async def test_shutdown_only_when_empty(tmp_path: Path) -> None:
    calls: list[int] = []
    sup = Supervisor(FakeBackend(), ev.MemorySink(), Store(tmp_path), "ns",
                     on_empty=lambda: calls.append(1))
    await sup.create(cfg("c1"))
    assert not sup.shutdown_requested() and calls == []
    await sup.delete("c1")
    assert sup.shutdown_requested() and calls == [1]


@pytest.mark.asyncio
async def test_pids_lists_processes_while_alive(tmp_path: Path) -> None:
    sup, backend, _ = make(tmp_path)
    pid = await sup.create(cfg("c1"))
    await sup.start("c1")
    assert [p for p, _ in sup.pids("c1")] == [pid, pid + 1]
    backend.handles["c1"].exit(0)
    await sup.wait("c1")
    assert sup.pids("c1") == []
