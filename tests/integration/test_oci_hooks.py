"""OCI hooks through the real LXC backend: each kind runs at its lifecycle point with the state
JSON on stdin, and failing or timed-out hooks have the effect runtime.md "Lifecycle" gives."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from runtime import errdefs
from runtime.lxc.mount import mounted_under
from tests.integration.oci_probe import SKIPS, Probe, busybox, probe

pytestmark = SKIPS
__all__ = ["busybox", "probe"]  # fixtures used by name

#: A hook that appends "<kind> <state JSON>" to a log: $1 is the kind, $2 the log.
RECORDER = '#!/bin/sh\nprintf "%s " "$1" >> "$2"\ncat >> "$2"\necho >> "$2"\n'


def recorder(base: Path) -> Path:
    path = base / "record.sh"
    path.write_text(RECORDER)
    path.chmod(0o755)
    return path


def hook(path: Path | str, *args: str, timeout: int | None = None) -> dict[str, Any]:
    h: dict[str, Any] = {"path": str(path), "args": [str(path), *args],
                         "env": ["PATH=/bin:/usr/bin"]}
    if timeout is not None:
        h["timeout"] = timeout
    return h


def records(log: Path) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, _, state = line.partition(" ")
        out.append((kind, json.loads(state)))
    return out


@pytest.mark.asyncio
async def test_every_hook_kind_runs_at_its_point_with_the_state(probe: Probe) -> None:
    rec, log = recorder(probe.base), probe.base / "hooks.log"
    # startContainer runs inside the container: its path and log are in the (shared) rootfs.
    inner = f"/tmp/rec-{uuid.uuid4().hex[:6]}"
    (probe.busybox / inner[1:]).write_text(RECORDER)
    (probe.busybox / inner[1:]).chmod(0o755)
    inner_log = f"/tmp/log-{uuid.uuid4().hex[:6]}"
    try:
        spec = probe.spec("echo program >> /tmp/order-" + inner_log[9:], annotations={"a": "b"})
        spec["hooks"] = {kind: [hook(rec, kind, str(log))] for kind in
                         ("prestart", "createRuntime", "createContainer", "poststart",
                          "poststop")}
        spec["hooks"]["startContainer"] = [hook(inner, "startContainer", inner_log)]
        handle = await probe.create(spec, probe.base / "out")
        assert [k for k, _ in records(log)] == ["prestart", "createRuntime", "createContainer"]
        for _, state in records(log):
            assert state["status"] == "creating" and state["pid"] == handle.pid
            assert state["bundle"] == str(probe.base / "b")
            assert state["annotations"] == {"a": "b"} and state["id"].startswith("p")
        await handle.start()
        assert await handle.wait() == 0
        kinds = [k for k, _ in records(log)]
        assert kinds == ["prestart", "createRuntime", "createContainer", "poststart"]
        assert records(log)[-1][1]["status"] == "running"
        inside = records(probe.busybox / inner_log[1:])
        assert [(k, s["status"], s["pid"]) for k, s in inside] == [
            ("startContainer", "created", handle.pid)]
        await handle.delete()
        kind, state = records(log)[-1]
        assert (kind, state["status"]) == ("poststop", "stopped") and "pid" not in state
    finally:
        for name in (inner, inner_log, "/tmp/order-" + inner_log[9:]):
            (probe.busybox / name[1:]).unlink(missing_ok=True)


@pytest.mark.asyncio
async def test_failing_create_runtime_hook_fails_create_and_leaves_nothing(
        probe: Probe) -> None:
    rec, log = recorder(probe.base), probe.base / "hooks.log"
    spec = probe.spec("true")
    spec["hooks"] = {"createRuntime": [hook("/bin/sh", "-c", "echo nope >&2; exit 3")],
                     "createContainer": [hook(rec, "createContainer", str(log))]}
    with pytest.raises(errdefs.FailedPrecondition,
                       match=r"hooks.createRuntime\[0\] \(/bin/sh\): exited with status 3: nope"):
        await probe.create(spec, probe.base / "out")
    assert not log.exists()  # the hooks after the failed one did not run
    assert mounted_under(probe.base) == []
    assert list((probe.base / "lxc").iterdir()) == []
    assert sorted(p.name for p in (probe.base / "s").iterdir()) == []


@pytest.mark.asyncio
async def test_timed_out_hook_is_killed_and_fails_create(probe: Probe) -> None:
    spec = probe.spec("true")
    spec["hooks"] = {"createRuntime": [hook("/bin/sleep", "30", timeout=1)]}
    with pytest.raises(errdefs.DeadlineExceeded, match=r"hooks.createRuntime\[0\].*timed out"):
        await probe.create(spec, probe.base / "out")
    assert mounted_under(probe.base) == []


@pytest.mark.asyncio
async def test_failing_start_container_hook_stops_the_container(probe: Probe) -> None:
    spec = probe.spec("echo must-not-run")
    spec["hooks"] = {"startContainer": [hook("/bin/false")]}
    out = probe.base / "out"
    handle = await probe.create(spec, out)
    with pytest.raises(errdefs.FailedPrecondition, match=r"hooks.startContainer\[0\]"):
        await handle.start()
    assert await handle.wait() == 137
    assert "must-not-run" not in out.read_text()


@pytest.mark.asyncio
async def test_failing_poststart_and_poststop_hooks_only_warn(
        probe: Probe, caplog: pytest.LogCaptureFixture) -> None:
    spec = probe.spec("echo ran")
    spec["hooks"] = {"poststart": [hook("/bin/false")], "poststop": [hook("/bin/false")]}
    handle = await probe.create(spec, probe.base / "out")
    with caplog.at_level(logging.WARNING, logger="runtime.hooks"):
        await handle.start()
        assert await handle.wait() == 0
        await handle.delete()
    warned = [r.getMessage() for r in caplog.records if r.name == "runtime.hooks"]
    assert any(m.startswith("hooks.poststart[0] (/bin/false): exited with status 1")
               for m in warned)
    assert any(m.startswith("hooks.poststop[0]") for m in warned)
    assert (probe.base / "out").read_text() == "ran\n"


@pytest.mark.asyncio
async def test_poststart_runs_after_the_program_was_execd(probe: Probe) -> None:
    # The state's pid is the container's first process: before the execve it runs the
    # runtime's init (/dev/.lxcri/init.lxc), after it the program (busybox here).
    script = probe.base / "exe.sh"
    script.write_text('#!/bin/sh\npid=$(sed \'s/.*"pid": *\\([0-9]*\\).*/\\1/\')\n'
                      'readlink "/proc/$pid/exe" >> "$1"\n')
    script.chmod(0o755)
    log = probe.base / "exe.log"
    spec = probe.spec("sleep 2")
    spec["hooks"] = {"poststart": [hook(script, str(log))]}
    handle = await probe.create(spec, probe.base / "out")
    await handle.start()
    assert log.read_text().strip().endswith("busybox"), log.read_text()
    handle.kill(9)
    await handle.wait()
