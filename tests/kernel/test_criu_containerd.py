"""CRIU through containerd itself, in the kernel test host: a counter run with
``ctr run --runtime io.containerd.proxmox.v2`` is checkpointed by ``ctr containers checkpoint
--task`` (containerd pauses the task, calls the shim's Checkpoint, resumes it), removed, and
brought back by ``ctr containers restore --live``: the restored task goes on counting from the
checkpoint, not from 1.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import PROXMOX_RUNTIME, BusyboxImage
from tests.kernel.helpers import sh, unique

pytestmark = [pytest.mark.kernel, pytest.mark.pve9]

# A token drawn once per program start: a restored process keeps it, a restarted one would
# draw a new one.
COUNTER = ("t=$(cat /proc/sys/kernel/random/uuid); i=0; "
           "while :; do i=$((i+1)); echo $t $i > /count.tmp; mv /count.tmp /count; "
           "sleep 0.2; done")


@pytest.fixture
def pool(openzfs_pool: str) -> str:
    return openzfs_pool


def mountpoint(dataset: str) -> Path:
    return Path(sh("zfs", "get", "-H", "-o", "value", "mountpoint", dataset).stdout.strip())


def token_and_count(root: Path) -> tuple[str, int]:
    token, n = (root / "count").read_text().split()
    return token, int(n)


def count(root: Path) -> int:
    return token_and_count(root)[1]


def wait_count_above(root: Path, above: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            n = count(root)
        except (OSError, ValueError):
            n = -1
        if n > above:
            return n
        time.sleep(0.2)
    raise AssertionError(f"the counter in {root} did not pass {above} within {timeout} s")


def diagnostics(tmp_path: Path, cid: str, root: Path) -> str:
    out = []
    for log in sorted((tmp_path / "criu").rglob("restore.log")):
        out.append(f"--- {log}\n" + "\n".join(log.read_text().splitlines()[-25:]))
    for log in sorted(root.rglob("*.log")) + sorted(root.rglob("restore.out")):
        if cid in str(log):
            out.append(f"--- {log}\n" + "\n".join(log.read_text().splitlines()[-25:]))
    out.append(subprocess.run(["ps", "-eo", "pid,ppid,stat,wchan:20,args"],
                              capture_output=True, text=True).stdout[-3000:])
    return "\n".join(out)


def test_ctr_checkpoint_and_live_restore_resume_the_counter(
        containerd: PrivateContainerd, busybox_image: BusyboxImage, pool: str,
        tmp_path: Path) -> None:
    cid = unique("crc")
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\nzfs_pool = "{pool}"\ncriu = "always"\n'
                      f'criu_dir = "{tmp_path / "criu"}"\n')
    ref = f"localhost/checkpoint/{cid}:1"
    try:
        containerd.ctr("run", "-d", "--null-io", "--runtime", PROXMOX_RUNTIME,
                       "--runtime-config-path", str(config), busybox_image.ref, cid,
                       "sh", "-c", COUNTER, timeout=120)
        root = mountpoint(f"{pool}/containers/{cid}")
        wait_count_above(root, 3)
        token = token_and_count(root)[0]
        r = containerd.ctr("containers", "checkpoint", "--task", cid, ref, check=False,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        images = list((tmp_path / "criu" / cid).iterdir())
        assert len(images) == 1 and (images[0] / "inventory.img").is_file()
        # containerd resumed the task after its checkpoint: it counts on.
        at_checkpoint_or_later = count(root)
        wait_count_above(root, at_checkpoint_or_later)
        containerd.remove_container(cid)

        try:
            restored = containerd.ctr("containers", "restore", "--live", cid, ref,
                                      check=False, timeout=90)
        except subprocess.TimeoutExpired:
            raise AssertionError("DIAG\n" + diagnostics(tmp_path, cid,
                                                          containerd.lxcri_root)) from None
        assert restored.returncode == 0, restored.stderr
        deadline = time.monotonic() + 60
        while containerd.task_status(cid) != "RUNNING":
            assert time.monotonic() < deadline, containerd.task_status(cid)
            time.sleep(0.2)
        root = mountpoint(f"{pool}/containers/{cid}")
        # The processes go on from the checkpoint: same token, counting on (a fresh start of
        # the program would draw a new token and write 1).
        start = count(root)
        seen = [wait_count_above(root, start)]
        seen.append(wait_count_above(root, seen[-1]))
        assert seen == [start + 1, start + 2], (start, seen)
        assert token_and_count(root)[0] == token
    finally:
        containerd.remove_container(cid)
        containerd.ctr("images", "rm", ref, check=False)
    leftovers = subprocess.run(["zfs", "list", "-H", "-o", "name", "-r", pool],
                               capture_output=True, text=True).stdout
    assert f"{pool}/containers/{cid}\n" not in leftovers
