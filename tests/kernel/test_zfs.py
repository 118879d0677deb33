"""OpenZFS: a pool on a file vdev; dataset, snapshot and clone through libzfs_core (cffi,
storage/lzc.py) and through the `zfs` command, each checked from the other side."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.lzc import LibZfsCore, ZfsError
from tests.kernel.helpers import sh, unique

pytestmark = [pytest.mark.kernel, pytest.mark.pve9]


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[str]:
    vdev = tmp_path / "vdev0.img"
    with vdev.open("wb") as f:
        f.truncate(256 << 20)
    name = unique("kz")
    # cachefile=none: nothing to import at the next boot; -R: mounts under the test's tmp dir.
    sh("zpool", "create", "-o", "cachefile=none", "-R", tmp_path / "mnt", name, vdev,
       timeout=120)
    yield name
    sh("zpool", "destroy", "-f", name, check=False, timeout=120)


@pytest.fixture
def lzc() -> Iterator[LibZfsCore]:
    with LibZfsCore() as lib:
        yield lib


def _zfs_names(pool: str) -> set[str]:
    out = sh("zfs", "list", "-H", "-o", "name", "-t", "all", "-r", pool).stdout
    return set(out.split())


def test_zfs_module_loaded() -> None:
    assert Path("/dev/zfs").exists()
    assert "zfs-kmod-" in sh("zfs", "version").stdout


def test_lzc_dataset_snapshot_clone(pool: str, lzc: LibZfsCore) -> None:
    ds, snap, clone = f"{pool}/py", f"{pool}/py@s1", f"{pool}/py-clone"
    # libzfs_core passes properties to the kernel as they are: numbers for numeric and index
    # properties, strings for string and user properties.
    lzc.create(ds, {"quota": 64 << 20, "org.proxmox-lxcri:smoke": "yes"})
    lzc.snapshot([snap])
    lzc.clone(clone, snap)
    for n in (ds, snap, clone):
        assert lzc.exists(n), n
    assert not lzc.exists(f"{pool}/nope")

    # The zfs command sees what libzfs_core made.
    assert {ds, snap, clone} <= _zfs_names(pool)
    assert sh("zfs", "get", "-H", "-o", "value", "origin", clone).stdout.strip() == snap
    assert sh("zfs", "get", "-Hp", "-o", "value", "quota", ds).stdout.strip() == str(64 << 20)
    assert sh("zfs", "get", "-H", "-o", "value", "org.proxmox-lxcri:smoke", ds).stdout.strip() \
        == "yes"

    with pytest.raises(ZfsError) as err:
        lzc.create(ds)
    assert err.value.errno == 17  # EEXIST

    lzc.destroy(clone)
    lzc.destroy(snap)
    assert not lzc.exists(clone) and not lzc.exists(snap)
    assert _zfs_names(pool) == {pool, ds}


def test_zfs_command_seen_by_lzc(pool: str, lzc: LibZfsCore, tmp_path: Path) -> None:
    ds, snap, clone = f"{pool}/cli", f"{pool}/cli@s1", f"{pool}/cli-clone"
    sh("zfs", "create", ds)
    mnt = tmp_path / "mnt" / pool / "cli"
    (mnt / "hello").write_text("from the zfs command\n")
    sh("zfs", "snapshot", snap)
    sh("zfs", "clone", snap, clone)
    for n in (ds, snap, clone):
        assert lzc.exists(n), n
    # The clone carries the snapshot's data.
    assert (tmp_path / "mnt" / pool / "cli-clone" / "hello").read_text() == "from the zfs command\n"
    sh("zfs", "destroy", clone)
    assert not lzc.exists(clone)
    assert lzc.exists(snap)
