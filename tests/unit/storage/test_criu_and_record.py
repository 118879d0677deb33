"""CRIU's reason as users see it, the checkpoint record, and the Task-service glue."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from runtime.errdefs import FailedPrecondition, InvalidArgument
from storage import criu
from storage.provisioner import CHECKPOINT_OPTION
from storage.service import RECORD_FILE, CheckpointRecord
from tests.unit.storage.fakes import FakeRunner

# `criu check` of CRIU 3.17.1 on this machine's kernel, verbatim (environment.md section 4).
CRIU_CHECK = """\
Error (criu/util.c:642): exited, status=1
Error (criu/util.c:642): exited, status=1
Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds
Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable
Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.
Error (criu/crtools.c:260): Could not initialize kernel features detection.
"""


def test_reason_is_crius_own_words() -> None:
    reason = criu.reason_from_output(CRIU_CHECK)
    assert reason.startswith("vdso: Unexpected rt vDSO area bounds; vdso: Failed to fill")
    assert criu.reason_from_output("(00.012) Error (criu/cr-dump.c:1): dump failed\n") == \
        "dump failed"
    assert criu.reason_from_output("something else\n") == "something else"


def test_check_failure_and_error_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(criu.shutil, "which", lambda name: "/usr/sbin/criu")
    runner = FakeRunner().on("criu", "check", rc=1, err=CRIU_CHECK)
    status = asyncio.run(criu.check(runner, cached=False))
    assert not status.works
    err = criu.unavailable(status)
    assert isinstance(err, FailedPrecondition)
    assert "vdso: Unexpected rt vDSO area bounds" in str(err)
    assert "filesystem-only checkpoint is still possible" in str(err)


def test_check_success(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(criu.shutil, "which", lambda name: "/usr/sbin/criu")
    runner = FakeRunner().on("criu", "check", out="Looks good.\n")
    assert asyncio.run(criu.check(runner, cached=False)).works


def test_missing_criu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(criu.shutil, "which", lambda name: None)
    status = asyncio.run(criu.check(FakeRunner(), cached=False))
    assert not status.works and "not installed" in status.reason


def test_record_round_trip(tmp_path: Path) -> None:
    rec = CheckpointRecord("tank", "tank/containers/c1", "tank/containers/c1@checkpoint-1",
                           "tok", 1, "")
    (tmp_path / RECORD_FILE).write_text(json.dumps(rec.to_json()))
    assert CheckpointRecord.load(tmp_path) == rec


def test_record_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="not a checkpoint of io.containerd.proxmox.v2"):
        CheckpointRecord.load(tmp_path)
    (tmp_path / RECORD_FILE).write_text('{"version": 9}')
    with pytest.raises(InvalidArgument, match="unreadable"):
        CheckpointRecord.load(tmp_path)


def test_task_service_uses_the_same_option_key() -> None:
    from shim.task_service import CHECKPOINT_OPTION as EDGE

    assert EDGE == CHECKPOINT_OPTION


@pytest.mark.parametrize("value, exit", [
    (b"", False), (b"\x08\x01", True), (b"\x08\x00", False),
    (b"\x42\x03abc\x08\x01", True),  # image_path (8) first, then exit
    (b"\x10\x01", False),  # open_tcp only
])
def test_checkpoint_exit_option(value: bytes, exit: bool) -> None:
    from shim.task_service import checkpoint_exit

    opts = SimpleNamespace(type_url="type.googleapis.com/containerd.runc.v1.CheckpointOptions",
                           value=value)
    assert checkpoint_exit(opts) is exit
    other = SimpleNamespace(type_url="runtimeoptions.v1.Options", value=b"\x08\x01")
    assert checkpoint_exit(other) is False


def test_check_result_is_shared_through_a_file_for_this_boot(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "criu"
    binary.write_text("#!/bin/sh\n")
    monkeypatch.setattr(criu.shutil, "which", lambda name: str(binary))
    monkeypatch.setattr(criu, "_cache", {})
    cache = tmp_path / "run" / "criu-check.json"
    runner = FakeRunner().on("criu", "check", rc=1, err=CRIU_CHECK)
    first = asyncio.run(criu.check(runner, cache_file=cache))
    assert not first.works and cache.is_file()
    # Another daemon (an empty in-process cache) reads the file: no second `criu check`.
    monkeypatch.setattr(criu, "_cache", {})
    assert asyncio.run(criu.check(FakeRunner(), cache_file=cache)) == first
    # A different CRIU binary is checked again.
    monkeypatch.setattr(criu, "_cache", {})
    binary.write_text("#!/bin/sh\n# upgraded\n")
    good = FakeRunner().on("criu", "check", out="Looks good.\n")
    assert asyncio.run(criu.check(good, cache_file=cache)).works


def test_the_cli_leaves_criu_of_shim_containers_to_the_task_api(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from storage import cli

    monkeypatch.setenv("PROXMOX_LXCRI_ROOT", str(tmp_path))
    assert cli.shim_container_dumper("c1") is None  # not a container of the shim
    (tmp_path / "containers/default/c1").mkdir(parents=True)
    (tmp_path / "containers/default/c1/state.json").write_text("{}")
    dumper = cli.shim_container_dumper("c1")
    assert dumper is not None
    with pytest.raises(FailedPrecondition, match="ctr task checkpoint"):
        asyncio.run(dumper(tmp_path / "images"))


def test_the_cli_does_not_resume_processes_lxc_dumped(tmp_path: Path) -> None:
    import argparse

    from runtime.lxc.criu_stdio import KEYS_FILE
    from storage import cli
    from storage.checkpoints import Checkpoint

    images = tmp_path / "images"
    images.mkdir()
    (images / KEYS_FILE).write_text("{}")
    cp = Checkpoint("checkpoint-1", "p/containers/c1@checkpoint-1", 1, 0, 0, criu=str(images))

    class Storage:
        async def restore(self, id: str, name: str | None) -> tuple[Checkpoint, list[str]]:
            return cp, []

        async def restore_processes(self, cp: Checkpoint) -> int:
            raise AssertionError("a plain criu restore must not be tried")

    args = argparse.Namespace(id="c1", snapshot=None, processes=True)
    with pytest.raises(FailedPrecondition, match="creating a task from the checkpoint"):
        asyncio.run(cli.cmd_restore(args, Storage(), None))  # type: ignore[arg-type]
