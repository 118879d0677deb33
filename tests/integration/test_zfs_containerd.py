"""ZFS storage end to end: ``ctr run --runtime io.containerd.proxmox.v2`` on a private containerd
with a zfs-fuse pool configured through ``--runtime-config-path``.

What a user sees: the container's ``/`` (from inside), datasets and snapshots in the pool, files
on both sides, ``proxmox-lxcri`` output, ``ctr`` errors. Each test has its own pool and removes
its containers even when it fails.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import leaks
from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import PROXMOX_RUNTIME, BusyboxImage
from tests.harness.zfs import TestPool, zfs_fuse_fixture, zfs_pool_fixture  # noqa: F401

pytestmark = pytest.mark.integration


@dataclass
class Env:
    ctd: PrivateContainerd
    pool: TestPool
    config: Path
    image: str

    def run(self, id: str, *args: str, detach: bool = False, check: bool = True,
            annotations: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        flags = ["-d"] if detach else ["--rm"]
        for k, v in (annotations or {}).items():
            flags += ["--annotation", f"{k}={v}"]
        return self.ctd.ctr("run", *flags, "--runtime", PROXMOX_RUNTIME,
                            "--runtime-config-path", str(self.config), self.image, id, *args,
                            check=check, timeout=timeout)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(self.ctd.env)
        argv = [sys.executable, "-c", "from shim.operator_cli import main; main()", *args,
                "--config", str(self.config)]
        r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60,
                           cwd=Path(__file__).resolve().parents[2])
        if check and r.returncode != 0:
            raise AssertionError(f"proxmox-lxcri {' '.join(args)}: {r.returncode}\n{r.stderr}")
        return r

    def dataset(self, id: str) -> str:
        return f"{self.pool.name}/containers/{id}"

    def names(self) -> list[str]:
        return self.pool.datasets()

    def zget(self, prop: str, name: str) -> str:
        return subprocess.run(["zfs", "get", "-H", "-p", "-o", "value", prop, name],
                              capture_output=True, text=True, check=True).stdout.strip()

    def of_container(self, id: str) -> list[str]:
        return [n for n in self.names() if n.startswith(self.dataset(id))]

    def wait_status(self, id: str, status: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.ctd.task_status(id) != status:
            assert time.monotonic() < deadline, f"{id} never became {status}"
            time.sleep(0.05)


@pytest.fixture
def env(containerd: PrivateContainerd, busybox_image: BusyboxImage,
        zfs_pool: TestPool) -> Iterator[Env]:
    config = zfs_pool.folder / "config.toml"
    config.write_text(f'[storage]\nzfs_pool = "{zfs_pool.name}"\ncriu = "never"\n'
                      "checkpoint_keep = 2\n")
    e = Env(containerd, zfs_pool, config, busybox_image.ref)
    before = {c for c in containerd.ctr("containers", "ls", "-q").stdout.split()}
    yield e
    for cid in set(containerd.ctr("containers", "ls", "-q").stdout.split()) - before:
        containerd.remove_container(cid)


def mounts_of(dataset: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if f" {dataset} " in line]


# -- rootfs -------------------------------------------------------------------------------------


def test_root_is_a_clone_of_the_cached_image(env: Env, unique_id: str) -> None:
    a, b = f"{unique_id}-a", f"{unique_id}-b"
    r = env.run(a, "sh", "-c", "grep ' / / ' /proc/self/mountinfo; echo mine > /written; "
                               "exec sleep 60", detach=True)
    env.wait_status(a, "RUNNING")
    env.run(b, "sleep", "60", detach=True)
    env.wait_status(b, "RUNNING")
    del r
    images = [n for n in env.names() if "/images/" in n and "@" not in n]
    assert len(images) == 1, "the second container of the image must not add a copy"
    base = images[0] + "@base"
    assert env.zget("origin", env.dataset(a)) == base
    assert env.zget("origin", env.dataset(b)) == base

    # Inside: the container's / is its dataset (zfs-fuse's FUSE mount shows the name).
    inside = env.run(f"{unique_id}-c", "grep", " / / ", "/proc/self/mountinfo").stdout
    assert f"fuse.zfs {env.dataset(unique_id + '-c')} " in inside

    mp_a = Path(env.zget("mountpoint", env.dataset(a)))
    deadline = time.monotonic() + 10
    while not (mp_a / "written").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (mp_a / "written").read_text() == "mine\n"
    assert not Path(env.zget("mountpoint", images[0]), "written").exists()
    assert not Path(env.zget("mountpoint", env.dataset(b)), "written").exists()


def test_quota_annotation_is_enforced_inside(env: Env, unique_id: str) -> None:
    r = env.run(unique_id, "sh", "-c",
                "dd if=/dev/urandom of=/big bs=1M count=40 2>&1; echo rc=$?",
                annotations={"lxcri.proxmox.io/quota": "16M"})
    assert "Disk quota exceeded" in r.stdout, r.stdout
    assert "rc=0" not in r.stdout


def test_bad_annotation_fails_create_and_leaves_nothing(env: Env, unique_id: str) -> None:
    r = env.run(unique_id, "true", check=False,
                annotations={"lxcri.proxmox.io/quota": "lots"})
    assert r.returncode != 0
    assert "lxcri.proxmox.io/quota: 'lots' is not a size" in r.stderr
    assert env.of_container(unique_id) == []
    assert mounts_of(env.dataset(unique_id)) == []


def test_failed_backend_create_destroys_the_dataset(env: Env, unique_id: str) -> None:
    r = env.run(unique_id, "/no/such/program", check=False)
    assert r.returncode != 0 and "no/such/program" in r.stderr
    assert env.of_container(unique_id) == []
    assert mounts_of(env.dataset(unique_id)) == []


# -- checkpoints --------------------------------------------------------------------------------


def test_checkpoint_write_restore_by_name_and_retention(env: Env, unique_id: str) -> None:
    env.run(unique_id, "sleep", "60", detach=True)
    env.wait_status(unique_id, "RUNNING")
    root = Path(env.zget("mountpoint", env.dataset(unique_id)))
    (root / "data").write_text("one")
    first = env.cli("checkpoint", unique_id).stdout.split("\t")[0]
    (root / "data").write_text("two")
    (root / "more").write_text("x")
    second = env.cli("checkpoint", unique_id).stdout.split("\t")[0]
    (root / "data").write_text("three")

    out = env.cli("restore", unique_id).stdout
    assert out.startswith(f"restored {second}")
    assert (root / "data").read_text() == "two"
    # The running container sees the restored file system.
    assert env.ctd.task_status(unique_id) == "RUNNING"

    out = env.cli("restore", unique_id, "--snapshot", first).stdout
    assert out.startswith(f"restored {first}") and second in out
    assert (root / "data").read_text() == "one" and not (root / "more").exists()

    for _ in range(3):  # checkpoint_keep = 2 in the test's config
        env.cli("checkpoint", unique_id)
    listed = json.loads(env.cli("checkpoints", unique_id, "--json").stdout)
    assert len(listed) == 2 and first not in [c["name"] for c in listed]
    assert all(c["snapshot"].startswith(env.dataset(unique_id) + "@checkpoint-")
               for c in listed)

    env.cli("checkpoints", unique_id, "--delete", listed[0]["name"])
    assert len(json.loads(env.cli("checkpoints", unique_id, "--json").stdout)) == 1

    status = env.cli("storage").stdout
    assert "ONLINE" in status and env.dataset(unique_id) in status
    assert "checkpoint" in status and "restore" in status


def test_criu_checkpoint_fails_with_crius_reason(env: Env, unique_id: str) -> None:
    check = subprocess.run(["criu", "check"], capture_output=True, text=True)
    if check.returncode == 0:
        pytest.skip("CRIU works on this kernel (the kernel test host covers that case)")
    env.run(unique_id, "sleep", "60", detach=True)
    env.wait_status(unique_id, "RUNNING")
    r = env.cli("checkpoint", unique_id, "--criu", check=False)
    assert r.returncode == 1
    assert "CRIU checkpoint not possible" in r.stderr
    assert "vDSO" in r.stderr or "vdso" in r.stderr  # CRIU's own words on this kernel
    # The filesystem checkpoint is still offered.
    assert env.cli("checkpoint", unique_id, "--no-criu").stdout.startswith("checkpoint-")


def _skip_without_pause(r: subprocess.CompletedProcess[str]) -> None:
    if r.returncode != 0 and "not implemented" in r.stderr and "pause" in r.stderr.lower():
        pytest.skip("ctr pauses the task before checkpointing it, and pausing is not "
                    "implemented by the runtime yet: " + r.stderr.strip())


def _blob(ctd: PrivateContainerd, digest: str) -> bytes:
    return subprocess.run([ctd.ctr_bin, "--address", ctd.address, "-n", ctd.namespace,
                           "content", "get", digest], capture_output=True, check=True,
                          timeout=30).stdout


def test_ctr_task_checkpoint_records_dataset_and_snapshot(env: Env, unique_id: str) -> None:
    env.run(unique_id, "sleep", "60", detach=True)
    env.wait_status(unique_id, "RUNNING")
    r = env.ctd.ctr("task", "checkpoint", unique_id, check=False)
    _skip_without_pause(r)
    assert r.returncode == 0, r.stderr
    ref = r.stdout.strip()
    try:
        digest = next(line.split()[2] for line in env.ctd.ctr("images", "ls").stdout.splitlines()
                      if line.split()[:1] == [ref])
        index = json.loads(_blob(env.ctd, digest))
        criu_blob = next(m["digest"] for m in index["manifests"]
                         if m["mediaType"].endswith("checkpoint.criu.tar"))
        with tarfile.open(fileobj=io.BytesIO(_blob(env.ctd, criu_blob))) as tar:
            member = tar.extractfile("proxmox-lxcri-checkpoint.json")
            assert member is not None
            record = json.load(member)
        assert record["dataset"] == env.dataset(unique_id)
        assert record["snapshot"].startswith(env.dataset(unique_id) + "@checkpoint-")
        assert record["snapshot"] in env.names()
        assert env.ctd.task_status(unique_id) == "RUNNING"  # no --exit: it keeps running
    finally:
        env.ctd.ctr("images", "rm", ref, check=False)


def test_checkpoint_and_restore_through_containerd(env: Env, unique_id: str) -> None:
    """``ctr containers checkpoint --task`` / ``ctr containers restore --live``: containerd's
    Checkpoint RPC, then a task created with that checkpoint. (containerd 1.6's ``ctr task
    checkpoint`` writes the image name under ``image.name`` while ``containers restore`` reads
    ``org.opencontainers.image.ref.name``, so its images cannot be restored by ctr.)"""
    env.run(unique_id, "sleep", "60", detach=True)
    env.wait_status(unique_id, "RUNNING")
    root = Path(env.zget("mountpoint", env.dataset(unique_id)))
    (root / "data").write_text("at checkpoint")
    ref = f"localhost/checkpoint/{unique_id}:1"
    r = env.ctd.ctr("containers", "checkpoint", "--task", unique_id, ref, check=False)
    _skip_without_pause(r)
    assert r.returncode == 0, r.stderr
    try:
        (root / "data").write_text("after")
        env.ctd.remove_container(unique_id)
        assert env.of_container(unique_id) == []  # its dataset is retained for the checkpoint

        restored = env.ctd.ctr("containers", "restore", "--live", unique_id, ref, check=False)
        assert restored.returncode == 0, restored.stderr
        env.wait_status(unique_id, "RUNNING")
        root = Path(env.zget("mountpoint", env.dataset(unique_id)))
        assert (root / "data").read_text() == "at checkpoint"
    finally:
        env.ctd.remove_container(unique_id)
        env.ctd.ctr("images", "rm", ref, check=False)


# -- clean-up -----------------------------------------------------------------------------------


def test_task_and_container_rm_leave_nothing(env: Env, unique_id: str) -> None:
    env.run(unique_id, "sleep", "60", detach=True)
    env.wait_status(unique_id, "RUNNING")
    env.cli("checkpoint", unique_id)
    assert env.of_container(unique_id)
    env.ctd.ctr("task", "kill", "-s", "SIGKILL", unique_id)
    env.wait_status(unique_id, "STOPPED")
    env.ctd.ctr("task", "rm", unique_id)
    env.ctd.ctr("container", "rm", unique_id)
    assert env.of_container(unique_id) == []
    assert mounts_of(env.dataset(unique_id)) == []


def test_delete_after_a_killed_shim_leaves_nothing(env: Env, unique_id: str) -> None:
    env.run(unique_id, "sleep", "60", detach=True)
    env.wait_status(unique_id, "RUNNING")
    env.cli("checkpoint", unique_id)
    shim = env.ctd.shim_pid(unique_id)
    assert shim is not None
    os.kill(shim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while leaks.alive(shim) and time.monotonic() < deadline:
        time.sleep(0.02)
    # containerd notices the dead shim and runs `containerd-shim-proxmox-v2 delete`.
    env.ctd.remove_container(unique_id)
    deadline = time.monotonic() + 10
    while env.of_container(unique_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert env.of_container(unique_id) == []
    assert mounts_of(env.dataset(unique_id)) == []


def test_cli_finds_the_pool_from_the_containers_state(env: Env, unique_id: str,
                                                      tmp_path: Path) -> None:
    """``checkpoint``, ``checkpoints`` and ``restore`` without ``--config``: the pool is the
    one the shim recorded for the container, not one the operator has to repeat."""
    empty = tmp_path / "config.toml"
    empty.write_text("# no [storage] section: no pool configured\n")

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, "-c", "from shim.operator_cli import main; main()",
                            *args], capture_output=True, text=True, timeout=60,
                           env={**env.ctd.env, "PROXMOX_LXCRI_CONFIG": str(empty)},
                           cwd=Path(__file__).resolve().parents[2])
        assert not check or r.returncode == 0, (args, r.returncode, r.stderr)
        return r

    env.run(unique_id, "sleep", "60", detach=True)
    env.wait_status(unique_id, "RUNNING")
    root = Path(env.zget("mountpoint", env.dataset(unique_id)))
    (root / "data").write_text("one")
    name = cli("checkpoint", unique_id, "--no-criu").stdout.split("\t")[0]
    assert name.startswith("checkpoint-")
    snapshots = subprocess.run(["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r",
                                env.dataset(unique_id)], capture_output=True, text=True,
                               check=True).stdout.split()
    assert f"{env.dataset(unique_id)}@{name}" in snapshots
    listed = json.loads(cli("checkpoints", unique_id, "--json").stdout)
    assert [c["name"] for c in listed] == [name]
    (root / "data").write_text("two")
    assert cli("restore", unique_id).stdout.startswith(f"restored {name}")
    assert (root / "data").read_text() == "one"
    ns = cli("checkpoints", unique_id, "--namespace", env.ctd.namespace, "--json").stdout
    assert [c["name"] for c in json.loads(ns)] == [name]
    r = cli("checkpoints", unique_id, "--namespace", "elsewhere", check=False)
    assert r.returncode == 1 and f"container {unique_id} has no ZFS dataset" in r.stderr

    # Without state and without a configured pool, the error says both.
    r = cli("checkpoint", f"{unique_id}-none", check=False)
    assert r.returncode == 1
    assert f"container {unique_id}-none has no ZFS dataset recorded" in r.stderr
    assert "no ZFS pool is configured" in r.stderr
    # An id is a name, never a pattern or a path.
    r = cli("checkpoints", "*", check=False)
    assert r.returncode == 1 and "container * has no ZFS dataset recorded" in r.stderr
    r = cli("checkpoints", "../x", check=False)
    assert r.returncode == 1 and "is not a container id" in r.stderr
