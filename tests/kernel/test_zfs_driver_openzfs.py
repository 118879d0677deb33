"""ZFS storage on OpenZFS, in the kernel test host (Debian's 6.1 kernel, zfs.ko, /dev/zfs).

- The driver contract of tests/integration/test_zfs_driver.py, run with the command-line driver
  and the libzfs_core driver (storage/zfs_lzc.py over storage/lzc.py): both must pass.
- A container (LXC) runs on a dataset the storage layer made with libzfs_core.
- A container with a counter is checkpointed with CRIU together with its dataset and restored;
  the counter continues from where it was.
- The output the parsers read, printed as JSON (the captured OpenZFS golden file comes from it).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.lxc import checkpoint as lxc_checkpoint
from storage import criu
from storage.driver import ZfsDriver
from storage.layers import ImageSource
from storage.runner import ThreadRunner
from storage.service import ZfsStorage
from storage.settings import StorageSettings
from storage.zfs_cli import ZfsCli
from storage.zfs_lzc import ZfsLzc, open_lzc
from tests.integration.test_zfs_driver import (  # noqa: F401  (the same tests, run here)
    test_contract_clone_and_dependents,
    test_contract_create_info_and_destroy_at_once,
    test_contract_errors,
    test_contract_pool_status,
    test_contract_snapshot_rollback,
)
from tests.kernel.helpers import COUNTER_SCRIPT, lxc_config, sh, unique

pytestmark = [pytest.mark.kernel, pytest.mark.pve9]


@pytest.fixture
def pool_name(openzfs_pool: str) -> str:
    return openzfs_pool


@pytest.fixture(params=["cli", "lzc"])
def zfs(request: pytest.FixtureRequest, pool_name: str) -> Iterator[ZfsDriver]:
    runner = ThreadRunner()
    if request.param == "cli":
        yield ZfsCli(runner)
        return
    lib = open_lzc()
    try:
        yield ZfsLzc(runner, lib)
    finally:
        lib.close()


@pytest.fixture
def busybox_dir(tmp_path: Path) -> Path:
    from tests.harness.rootfs import populate_busybox_rootfs

    root = tmp_path / "image"
    populate_busybox_rootfs(root)
    return root


def test_capture_openzfs_output(pool_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.storage.capture import capture, normalise

    mountpoint = sh("zfs", "get", "-H", "-o", "value", "mountpoint", pool_name).stdout.strip()
    text = normalise(capture(pool_name), pool_name, mountpoint)
    data = json.loads(text)
    assert data["err_missing"]["rc"] == 1 and data["get_recursive"]["rc"] == 0
    print("OPENZFS-CAPTURE-BEGIN")
    print(text)
    print("OPENZFS-CAPTURE-END")


def test_container_runs_on_a_dataset_made_with_libzfs_core(pool_name: str, busybox_dir: Path,
                                                           tmp_path: Path) -> None:
    runner = ThreadRunner()
    lib = open_lzc()
    storage = ZfsStorage(ZfsLzc(runner, lib), runner, pool_name)
    settings = StorageSettings(pool=pool_name, quota=64 << 20)

    async def make() -> str:
        base = await storage.layers.ensure(ImageSource((str(busybox_dir),)))
        info = await storage.create_dataset("k1", base, settings, "default")
        return info.mountpoint or ""

    try:
        root = Path(asyncio.run(make()))
        lxcpath = tmp_path / "lxc"
        (lxcpath / "k1").mkdir(parents=True)
        # AppArmor is active in the guest; the AppArmor test covers profiles.
        (lxcpath / "k1/config").write_text(lxc_config(root, "k1", ["/bin/true"], [
            "lxc.apparmor.profile = unconfined"]))
        out = sh("lxc-execute", "-P", lxcpath, "-n", "k1", "--", "/bin/sh", "-c",
                 "echo from-inside > /proof; grep ' / / ' /proc/self/mountinfo", timeout=120)
        assert f" zfs {pool_name}/containers/k1 " in out.stdout, out.stdout
        assert (root / "proof").read_text() == "from-inside\n"
        assert sh("zfs", "get", "-H", "-o", "value", "origin",
                  f"{pool_name}/containers/k1").stdout.strip().endswith("@base")
        asyncio.run(storage.destroy_dataset("k1"))
        assert not sh("zfs", "list", "-H", "-o", "name", "-r",
                      f"{pool_name}/containers").stdout.strip().count("/k1")
    finally:
        lib.close()


COUNTER = COUNTER_SCRIPT


def _count(root: Path) -> int:
    try:
        return int((root / "count").read_text().strip() or -1)
    except (FileNotFoundError, ValueError):
        return -1


def _wait_count(root: Path, above: int, timeout: float = 60) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        n = _count(root)
        if n > above:
            return n
        time.sleep(0.2)
    raise AssertionError(f"counter in {root} did not pass {above} within {timeout} s")


def test_criu_checkpoint_with_dataset_and_restore(pool_name: str, busybox_dir: Path,
                                                  tmp_path: Path) -> None:
    runner = ThreadRunner()
    assert asyncio.run(criu.check(runner)).works, "CRIU should work in the kernel test host"
    lib = open_lzc()
    storage = ZfsStorage(ZfsLzc(runner, lib), runner, pool_name)
    settings = StorageSettings(pool=pool_name, criu="always", criu_dir=tmp_path / "criu")
    (busybox_dir / "run.sh").write_text(COUNTER)
    (busybox_dir / "run.sh").chmod(0o755)
    lxcpath, name = tmp_path / "lxc", unique("zc")

    async def make() -> Path:
        base = await storage.layers.ensure(ImageSource((str(busybox_dir),)))
        info = await storage.create_dataset(name, base, settings, "default")
        return Path(info.mountpoint or "")

    try:
        root = asyncio.run(make())
        (lxcpath / name).mkdir(parents=True)
        (lxcpath / name / "config").write_text(lxc_config(root, name, ["/run.sh"], [
            "lxc.apparmor.profile = unconfined", "lxc.console.path = none"]))
        sh("lxc-start", "-P", lxcpath, "-n", name, "-d")
        before = _wait_count(root, 3)

        async def dump(images: Path) -> None:
            await lxc_checkpoint.dump(runner, lxcpath, name, images, stop=True)

        async def restore(images: Path) -> None:
            # Through sh(): output to files, since the restored monitor keeps our stdio.
            await asyncio.to_thread(sh, "lxc-checkpoint", "-P", lxcpath, "-n", name, "-D",
                                    images, "-r", "-v", timeout=180)

        cp = asyncio.run(storage.checkpoint(name, settings, dumper=dump, leave_running=False))
        assert cp.criu and Path(cp.criu, "dump.log").exists()
        dumped = _count(root)
        assert dumped >= before
        (root / "count").write_text("0\n")  # a change the restore must undo
        restored, _ = asyncio.run(storage.restore(name, cp.name))
        assert _count(root) == dumped
        asyncio.run(storage.restore_processes(restored, restorer=restore))
        after = _wait_count(root, dumped + 2)
        assert after > dumped  # continued: a fresh start would count from 1
    finally:
        sh("lxc-stop", "-P", lxcpath, "-n", name, "-k", check=False, timeout=60)
        asyncio.run(storage.destroy_dataset(name))
        lib.close()
