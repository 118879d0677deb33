"""The backend seam (runtime.backend, issue 14 section 1): what every backend shares is the
supervisor's, checkpoint and restore are capabilities, the registry maps a task's recorded
backend name to its code, and one typed record serves the shim and the OCI CLI."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from runtime import events as ev
from runtime import registry
from runtime.backend import Checkpointable, Restorer
from runtime.errdefs import InvalidArgument, NotImplementedErr
from runtime.store import CLI_OWNER, Store, TaskRecord
from runtime.supervisor import Supervisor
from runtime.types import CreateConfig, RestoreSource
from tests.fakes.backend import FakeBackend, FakeHandle

SPEC = {"ociVersion": "1.0.2",
        "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"}}


def cfg(id: str = "c1", **kw: Any) -> CreateConfig:
    return CreateConfig(id=id, namespace="ns", bundle=Path("/b"), spec=dict(SPEC), **kw)


class Recorder:
    """A provisioner that records what reached it."""

    name = "rec"

    def __init__(self, source: RestoreSource | None = None) -> None:
        self.prepared: list[str] = []
        self.released: list[str] = []
        self.targets: list[object] = []
        self.source = source

    async def prepare(self, config: CreateConfig) -> CreateConfig:
        self.prepared.append(config.id)
        return dataclasses.replace(config, restore=self.source)

    async def release(self, config: CreateConfig) -> None:
        self.released.append(config.id)

    async def checkpoint(self, config: CreateConfig, pid: int | None, directory: Path, *,
                         leave_running: bool, target: Checkpointable | None = None) -> None:
        self.targets.append(target)
        if target is not None:
            await target.checkpoint(directory / "images", leave_running=leave_running)


class DumpingHandle(FakeHandle):
    def __init__(self, pid: int) -> None:
        super().__init__(pid)
        self.dumps: list[tuple[Path, bool]] = []

    async def checkpoint(self, images: Path, *, leave_running: bool) -> None:
        self.dumps.append((images, leave_running))


class DumpingBackend(FakeBackend):
    async def create(self, config: CreateConfig) -> FakeHandle:
        plain = await super().create(config)
        handle = DumpingHandle(plain.pid)
        self.handles[config.id] = handle
        return handle


class RestoringBackend(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.restored: list[RestoreSource] = []

    async def restore(self, config: CreateConfig, source: RestoreSource) -> FakeHandle:
        self.restored.append(source)
        return await super().create(config)


# -- validation before anything is made ----------------------------------------------------------


@pytest.mark.asyncio
async def test_an_invalid_bundle_is_refused_before_any_provisioner_or_backend(
        tmp_path: Path) -> None:
    rec, backend = Recorder(), FakeBackend()
    sup = Supervisor(backend, ev.MemorySink(), Store(tmp_path), "ns", provisioners=(rec,))
    bad = dataclasses.replace(cfg(), spec={**SPEC, "ociVersion": "2.0.0"})
    with pytest.raises(InvalidArgument, match="ociVersion: 2.0.0 is not supported"):
        await sup.create(bad)
    assert rec.prepared == [] and backend.handles == {} and sup.ids() == []


@pytest.mark.asyncio
async def test_hooks_without_a_reaper_are_refused_cleanly(tmp_path: Path) -> None:
    rec = Recorder()
    sup = Supervisor(FakeBackend(), ev.MemorySink(), Store(tmp_path), "ns", provisioners=(rec,))
    spec = {**SPEC, "hooks": {"poststart": [{"path": "/bin/true"}]}}
    with pytest.raises(Exception, match="hooks"):
        await sup.create(dataclasses.replace(cfg(), spec=spec))
    assert rec.released == ["c1"] and sup.ids() == []


# -- restore and checkpoint are capabilities ------------------------------------------------------


@pytest.mark.asyncio
async def test_a_restore_source_goes_to_a_restorer_backend(tmp_path: Path) -> None:
    source = RestoreSource(tmp_path / "images")
    backend = RestoringBackend()
    assert isinstance(backend, Restorer)
    sup = Supervisor(backend, ev.MemorySink(), Store(tmp_path), "ns",
                     provisioners=(Recorder(source),))
    await sup.create(cfg())
    assert backend.restored == [source]


@pytest.mark.asyncio
async def test_a_backend_that_cannot_restore_says_so_and_leaves_nothing(tmp_path: Path) -> None:
    rec = Recorder(RestoreSource(tmp_path / "images"))
    backend = FakeBackend()
    assert not isinstance(backend, Restorer)
    sup = Supervisor(backend, ev.MemorySink(), Store(tmp_path), "ns", provisioners=(rec,))
    with pytest.raises(NotImplementedErr, match="the fake backend cannot restore"):
        await sup.create(cfg())
    assert backend.handles == {} and rec.released == ["c1"] and sup.ids() == []
    assert Store(tmp_path).load("ns", "c1") is None


@pytest.mark.asyncio
async def test_storage_gets_the_handle_only_when_it_is_checkpointable(tmp_path: Path) -> None:
    for backend, dumpable in ((DumpingBackend(), True), (FakeBackend(), False)):
        rec = Recorder()
        sup = Supervisor(backend, ev.MemorySink(), Store(tmp_path), "ns", provisioners=(rec,))
        await sup.create(cfg())
        await sup.start("c1")
        await sup.checkpoint("c1", tmp_path / "cp", exit=False)
        handle = backend.handles["c1"]
        assert rec.targets == [handle if dumpable else None]
        if isinstance(handle, DumpingHandle):
            assert handle.dumps == [(tmp_path / "cp" / "images", True)]
        handle.exit(0)
        await sup.wait("c1")
        await sup.delete("c1")


# -- the registry --------------------------------------------------------------------------------

CLEANED: list[tuple[str, Path]] = []


def fake_cleanup(state_dir: Path, bundle: Path) -> tuple[int, int]:
    CLEANED.append(("fake", state_dir))
    return 4242, 3


def test_the_registry_opens_backends_and_their_cleanups_by_name(tmp_path: Path) -> None:
    from runtime.lxc.cleanup import cleanup as lxc_cleanup

    assert registry.DEFAULT == "lxc" and "lxc" in registry.names()
    assert registry.cleanup("lxc") is lxc_cleanup
    with pytest.raises(InvalidArgument, match="backend 'nope': unknown"):
        registry.cleanup("nope")
    # With no name recorded, every backend looks; none finds anything here.
    assert registry.cleanup_any("", tmp_path, tmp_path) == (0, 137)


def test_the_delete_action_cleans_up_with_the_backend_named_in_the_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shim import delete
    from shim.flags import Flags

    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))  # undone after
    registry.register("fake", lambda ctx: FakeBackend(),
                      f"{__name__}:fake_cleanup")
    monkeypatch.setenv("PROXMOX_LXCRI_ROOT", str(tmp_path))
    store = Store(tmp_path)
    store.save_record(TaskRecord(id="c9", namespace="ns", bundle=str(tmp_path),
                                 backend="fake", pid=77))
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", type("S", (), {"buffer": out, "flush": lambda s: None})())
    flags = Flags()
    flags.namespace, flags.id, flags.bundle = "ns", "c9", str(tmp_path)
    CLEANED.clear()
    assert delete._delete_leftovers(flags) == 0
    assert CLEANED == [("fake", store.container_dir("ns", "c9"))]
    # DeleteResponse{pid 4242, exit_status 3}: the fake backend's answer.
    assert out.getvalue().startswith(b"\x08" + delete._varint(4242) + b"\x10\x03")
    assert not store.container_dir("ns", "c9").exists()


# -- one typed record ----------------------------------------------------------------------------


def test_the_task_record_round_trips_and_distrusts_bad_values(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rec = TaskRecord(id="a", namespace="ns", bundle="/b", backend="lxc", status="running",
                     pid=12, owner=CLI_OWNER, monitor_pid=11, created="2026-12-06T00:00:00Z",
                     oci_version="1.0.2", annotations={"k": "v"})
    store.save_record(rec)
    assert store.load_record("ns", "a") == rec
    raw = json.loads((store.container_dir("ns", "a") / "state.json").read_text())
    assert raw["backend"] == "lxc" and raw["schema"] == 1
    hostile = {**raw, "pid": "12; rm -rf /", "annotations": ["x"], "exit_status": "0",
               "unknown": 1}
    (store.container_dir("ns", "a") / "state.json").write_text(json.dumps(hostile))
    loaded = store.load_record("ns", "a")
    assert loaded is not None
    assert (loaded.pid, loaded.annotations, loaded.exit_status) == (0, {}, None)


@pytest.mark.asyncio
async def test_the_supervisor_records_its_backend_for_the_delete_action(
        tmp_path: Path) -> None:
    store = Store(tmp_path)
    sup = Supervisor(FakeBackend(), ev.MemorySink(), store, "ns")
    await sup.create(cfg())
    rec = store.load_record("ns", "c1")
    assert rec is not None
    assert (rec.backend, rec.owner, rec.shim_pid, rec.status) == ("fake", "", os.getpid(),
                                                                  "created")
