"""Exec processes in the lifecycle core: events, error classes and the init-exit-last rule."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime import events as ev
from runtime.errdefs import AlreadyExists, FailedPrecondition, NotFound
from runtime.store import Store
from runtime.supervisor import Supervisor
from runtime.types import CreateConfig, ExecConfig, Status
from tests.fakes.backend import FakeBackend

SPEC = {"ociVersion": "1.0.2", "process": {"args": ["sleep", "60"], "cwd": "/",
                                           "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"}}


async def running(tmp_path: Path) -> tuple[Supervisor, FakeBackend, ev.MemorySink]:
    backend, sink = FakeBackend(), ev.MemorySink()
    sup = Supervisor(backend, sink, Store(tmp_path), "ns")
    await sup.create(CreateConfig(id="c", namespace="ns", bundle=Path("/b"), spec=SPEC))
    await sup.start("c")
    return sup, backend, sink


def names(sink: ev.MemorySink) -> list[str]:
    out = []
    for e in sink.events:
        who = getattr(e, "exec_id", "") or (e.id if isinstance(e, ev.ProcessExited) else "")
        out.append(f"{type(e).__name__}:{who}" if who else type(e).__name__)
    return out


@pytest.mark.asyncio
async def test_exec_lifecycle_and_events(tmp_path: Path) -> None:
    sup, backend, sink = await running(tmp_path)
    sup.add_exec("c", ExecConfig("e1", {"args": ["true"]}))
    assert sup.state("c", "e1").status is Status.CREATED
    pid = await sup.start("c", "e1")
    assert sup.state("c", "e1").status is Status.RUNNING and sup.state("c", "e1").pid == pid
    assert ("e1" in [x for _, x in sup.pids("c")])
    handle = backend.handles["c"].execs["e1"]
    handle.exit(3)
    assert (await sup.wait("c", "e1")).status == 3
    await asyncio.sleep(0)
    assert handle.closed
    assert (await sup.delete("c", "e1")).status == 3
    with pytest.raises(NotFound):
        sup.state("c", "e1")
    assert names(sink) == ["TaskCreated", "TaskStarted", "ExecAdded:e1", "ExecStarted:e1",
                           "ProcessExited:e1"]


@pytest.mark.asyncio
async def test_exec_error_classes(tmp_path: Path) -> None:
    sup, backend, _ = await running(tmp_path)
    sup.add_exec("c", ExecConfig("e1", {"args": ["true"]}))
    with pytest.raises(AlreadyExists):
        sup.add_exec("c", ExecConfig("e1", {"args": ["true"]}))
    with pytest.raises(FailedPrecondition, match="process not created"):
        sup.kill("c", "e1", 9)
    with pytest.raises(NotFound):
        await sup.start("c", "nope")
    backend.handles["c"].exit(0)
    await sup.wait("c")
    with pytest.raises(FailedPrecondition, match="init process is not running"):
        await sup.start("c", "e1")
    with pytest.raises(FailedPrecondition, match="not running"):
        sup.add_exec("c", ExecConfig("e2", {"args": ["true"]}))


@pytest.mark.asyncio
async def test_init_exit_is_published_after_exec_exits(tmp_path: Path) -> None:
    sup, backend, sink = await running(tmp_path)
    sup.add_exec("c", ExecConfig("long", {"args": ["sleep", "9"]}))
    await sup.start("c", "long")
    backend.handles["c"].exit(137)  # the init dies first …
    await asyncio.sleep(0.01)
    assert "ProcessExited:c" not in names(sink)  # … but its exit waits for the exec's
    assert sup.state("c").status is Status.RUNNING
    backend.handles["c"].execs["long"].exit(137)
    await sup.wait("c")
    seq = names(sink)
    assert seq.index("ProcessExited:long") < seq.index("ProcessExited:c"), seq


@pytest.mark.asyncio
async def test_pause_resume_states_and_events(tmp_path: Path) -> None:
    sup, backend, sink = await running(tmp_path)
    # The fake backend has no freezer: the capability check answers NotImplemented.
    from runtime.errdefs import NotImplementedErr

    with pytest.raises(NotImplementedErr):
        await sup.pause("c")
    assert sup.state("c").status is Status.RUNNING
