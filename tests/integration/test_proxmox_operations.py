"""The Proxmox backend's operator side, through containerd and the ``proxmox-lxcri`` CLI,
against the Proxmox stand-in: rolling a CT back to its newest checkpoint (``restore``), a task
from a checkpoint (refused, with the reason), and removing image templates no CT is linked to
any more (``pve-images prune``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.zfs import zfs_fuse_fixture  # noqa: F401
from tests.integration.test_proxmox_backend import Pve, env, write_config  # noqa: F401
from tests.pvestandin.fixture import pve_standin_fixture  # noqa: F401

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def cli(e: Pve, *args: str, config: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", "from shim.operator_cli import main; main()", *args,
            "--config", str(config or e.config)]
    r = subprocess.run(argv, capture_output=True, text=True, env=dict(e.ctd.env), timeout=120,
                       cwd=REPO)
    if check and r.returncode != 0:
        raise AssertionError(f"proxmox-lxcri {' '.join(args)}: {r.returncode}\n{r.stderr}")
    return r


def wait_ct_stopped(e: Pve, vmid: int) -> None:
    deadline = time.monotonic() + 30
    while e.cts()[vmid]["status"] != "stopped":
        assert time.monotonic() < deadline, "the CT did not stop after its init exited"
        time.sleep(0.1)


def test_operator_restore_rolls_the_ct_back_to_its_newest_checkpoint(
        env: Pve, unique_id: str, tmp_path: Path) -> None:  # noqa: F811
    config = write_config(env.pve, tmp_path, checkpoint_keep="2")
    env.run(unique_id, "sh", "-c", "echo one > /f; exec sleep 300", detach=True, config=config)
    env.wait_status(unique_id, "RUNNING")
    found = env.ct_of(unique_id)
    assert found is not None
    vmid = found[0]

    def checkpoint() -> str:
        out = cli(env, "checkpoint", unique_id, config=config).stdout
        assert f"Proxmox snapshot of CT {vmid}" in out, out
        return out.split("\t")[0]

    first = checkpoint()
    env.ctd.ctr("task", "exec", "--exec-id", "w2", unique_id, "sh", "-c", "echo two > /f")
    second, third = checkpoint(), checkpoint()
    listed = cli(env, "checkpoints", unique_id, "--json", config=config).stdout
    assert [c["name"] for c in __import__("json").loads(listed)] == [second, third], \
        "checkpoint_keep = 2: the oldest went"
    assert f'"{first}"' not in listed
    env.ctd.ctr("task", "exec", "--exec-id", "w3", unique_id, "sh", "-c", "echo three > /f")

    r = cli(env, "restore", unique_id, config=config, check=False)
    assert r.returncode == 1
    assert (f"cannot restore {third} of container {unique_id} (CT {vmid}): it is running; "
            "stop the task first") in r.stderr, r.stderr
    assert env.ctd.task_status(unique_id) == "RUNNING", "a refused restore leaves it running"

    env.ctd.ctr("task", "kill", "-s", "SIGKILL", unique_id)
    env.wait_status(unique_id, "STOPPED")
    wait_ct_stopped(env, vmid)
    r = cli(env, "restore", unique_id, "--snapshot", second, config=config, check=False)
    assert r.returncode == 1
    assert ("Proxmox rolls back only to the newest checkpoint "
            f"({third}); delete the newer ones first: {third}") in r.stderr, r.stderr
    r = cli(env, "restore", unique_id, "--snapshot", "checkpoint-1", config=config,
            check=False)
    assert r.returncode == 1 and (f"container {unique_id} (CT {vmid}) has no checkpoint "
                                  f"checkpoint-1 (it has {second}, {third})") in r.stderr
    assert env.ct_file(vmid, "f") == "three\n"

    out = cli(env, "restore", unique_id, config=config).stdout
    assert out.startswith(f"restored {third}\t") and f"CT {vmid}" in out, out
    assert env.ct_file(vmid, "f") == "two\n", "the CT's files are the checkpoint's"
    # Retention goes on after a restore.
    fourth = checkpoint()
    listed = cli(env, "checkpoints", unique_id, "--json", config=config).stdout
    assert [c["name"] for c in __import__("json").loads(listed)] == [third, fourth]

    env.ctd.ctr("task", "rm", unique_id)
    env.ctd.ctr("container", "rm", unique_id)
    assert env.ct_of(unique_id) is None
    assert env.leftovers() == []


def test_operator_checkpoint_exit_ends_the_task(env: Pve, unique_id: str) -> None:  # noqa: F811
    env.run(unique_id, "sleep", "300", detach=True)
    env.wait_status(unique_id, "RUNNING")
    found = env.ct_of(unique_id)
    assert found is not None
    name = cli(env, "checkpoint", unique_id, "--exit").stdout.split("\t")[0]
    env.wait_status(unique_id, "STOPPED")
    wait_ct_stopped(env, found[0])
    snaps = [s["name"] for s in env.api("GET", f"/nodes/{env.pve.node}/lxc/{found[0]}/snapshot")]
    assert name in snaps
    r = cli(env, "checkpoint", unique_id, "--criu", check=False)
    assert r.returncode == 1 and "filesystem snapshots only" in r.stderr, r.stderr
    env.ctd.ctr("task", "rm", unique_id)
    env.ctd.ctr("container", "rm", unique_id)
    assert env.leftovers() == []


def test_task_from_a_checkpoint_is_refused_with_the_reason(env: Pve,  # noqa: F811
                                                           unique_id: str) -> None:
    """``ctr containers restore --live``: CreateTaskRequest.checkpoint. Proxmox can only make
    a CT from a snapshot as a full copy (docs/proxmox.md), so the create fails and says so,
    naming the checkpoint, and makes nothing."""
    env.run(unique_id, "sleep", "300", detach=True)
    env.wait_status(unique_id, "RUNNING")
    found = env.ct_of(unique_id)
    assert found is not None
    ref = f"localhost/checkpoint/{unique_id}:1"
    r = env.ctd.ctr("containers", "checkpoint", "--task", unique_id, ref, check=False)
    assert r.returncode == 0, r.stderr
    try:
        env.ctd.remove_container(unique_id)
        before = set(env.cts())
        restored = env.ctd.ctr("containers", "restore", "--live", unique_id, ref, check=False)
        assert restored.returncode != 0
        assert f"of CT {found[0]})" in restored.stderr, restored.stderr
        assert "cannot create one at O(1) cost" in restored.stderr
        assert "proxmox-lxcri restore" in restored.stderr
        assert set(env.cts()) <= before, "nothing made"
    finally:
        env.ctd.remove_container(unique_id)
        env.ctd.ctr("images", "rm", ref, check=False)
    assert env.leftovers() == []


# -- image templates ------------------------------------------------------------------------


def wait_task(e: Pve, upid: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while True:
        st: dict[str, object] = e.api("GET", f"/nodes/{e.pve.node}/tasks/{upid}/status")
        if st["status"] == "stopped":
            return st
        assert time.monotonic() < deadline, f"task {upid} still running"
        time.sleep(0.05)


def templates(e: Pve) -> dict[int, str]:
    return {int(c["vmid"]): str(c.get("name")) for c in
            e.api("GET", f"/nodes/{e.pve.node}/lxc") if str(c.get("template", 0)) == "1"}


def an_older_image_template(e: Pve) -> int:
    """An image template as the backend makes one (name, tag), for another image."""
    vmid = int(e.api("GET", "/cluster/nextid"))
    upid = e.api("POST", f"/nodes/{e.pve.node}/lxc", data={
        "vmid": vmid, "ostemplate": e.pve.template, "rootfs": "local-zfs:1",
        "hostname": "lxcri-img-00000000000000000bad", "tags": "lxcri-image"})
    assert wait_task(e, upid)["exitstatus"] == "OK"
    e.api("POST", f"/nodes/{e.pve.node}/lxc/{vmid}/template")
    deadline = time.monotonic() + 60
    while vmid not in templates(e):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return vmid


def test_unused_image_templates_are_removed(env: Pve, unique_id: str,  # noqa: F811
                                            tmp_path: Path) -> None:
    """``image_keep = 0``: a new template removes the unused ones; ``pve-images prune``
    removes one once its last linked clone is gone, and never one a CT is linked to (Proxmox
    would refuse it too)."""
    import json

    older = an_older_image_template(env)
    rows = json.loads(cli(env, "pve-images", "ls", "--json").stdout)
    assert [(r["vmid"], r["clones"]) for r in rows] == [(older, [])]

    config = write_config(env.pve, tmp_path, image_keep="0")
    env.run(unique_id, "sleep", "300", detach=True, config=config)
    env.wait_status(unique_id, "RUNNING")
    found = env.ct_of(unique_id)
    assert found is not None
    now = templates(env)
    assert older not in now, "the unused template went when the new one was made"
    assert len(now) == 1
    (image,) = now
    rows = json.loads(cli(env, "pve-images", "ls", "--json").stdout)
    assert [(r["vmid"], r["clones"]) for r in rows] == [(image, [found[0]])]

    out = cli(env, "pve-images", "prune").stdout
    assert out.strip().splitlines()[-1] == "0 unused image template(s) removed"
    # What Proxmox does with a template that has linked clones (pve-storage vdisk_free).
    upid = env.api("DELETE", f"/nodes/{env.pve.node}/lxc/{image}")
    assert "still in use by linked cloned" in str(wait_task(env, upid)["exitstatus"])
    assert image in templates(env)

    env.ctd.ctr("task", "kill", "-s", "SIGKILL", unique_id)
    env.wait_status(unique_id, "STOPPED")
    env.ctd.ctr("task", "rm", unique_id)
    env.ctd.ctr("container", "rm", unique_id)
    out = cli(env, "pve-images", "prune").stdout
    assert f"removed CT {image}\t" in out, out
    assert templates(env) == {}
    assert env.pve.leftovers() == [], "no template, no base volume, nothing"
