"""The ZFS driver contract, against a real pool.

Here: the command-line driver on zfs-fuse. The kernel test host imports these same tests
(tests/kernel/test_zfs_driver_openzfs.py) and runs them against OpenZFS with both the
command-line and the libzfs_core driver, so the two behave alike. A module that imports them
provides the ``zfs`` (a driver) and ``pool_name`` fixtures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.errdefs import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from storage.driver import ZfsDriver
from storage.runner import ThreadRunner
from storage.zfs_cli import ZfsCli
from tests.harness.zfs import TestPool, zfs_fuse_fixture, zfs_pool_fixture  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def pool_name(zfs_pool: TestPool) -> Iterator[str]:
    yield zfs_pool.name


@pytest.fixture
def zfs(pool_name: str) -> ZfsDriver:
    return ZfsCli(ThreadRunner())


def test_contract_create_info_and_destroy_at_once(zfs: ZfsDriver, pool_name: str) -> None:
    async def main() -> None:
        ds = f"{pool_name}/a"
        await zfs.create(ds, {"quota": str(64 << 20), "reservation": str(8 << 20),
                              "lxcri.proxmox.io:test": "yes"})
        assert await zfs.exists(ds)
        (info,) = await zfs.info([ds], user_props=("lxcri.proxmox.io:test",))
        assert info.type == "filesystem" and info.quota == 64 << 20
        assert info.reservation == 8 << 20 and info.mounted and info.mountpoint
        assert info.user == {"lxcri.proxmox.io:test": "yes"} and info.creation > 0
        assert Path(info.mountpoint).is_dir()
        # Destroy right after create: zfs-fuse answers "busy" once; the driver copes.
        await zfs.destroy(ds)
        assert not await zfs.exists(ds)

    asyncio.run(main())


def test_contract_snapshot_rollback(zfs: ZfsDriver, pool_name: str) -> None:
    async def main() -> None:
        ds = f"{pool_name}/b"
        await zfs.create(ds)
        (info,) = await zfs.info([ds])
        f = Path(info.mountpoint or "", "f")
        f.write_text("1")
        await zfs.snapshot(f"{ds}@s1", {"lxcri.proxmox.io:exported": "tok"})
        f.write_text("2")
        await zfs.snapshot(f"{ds}@s2")
        f.write_text("3")
        with pytest.raises(FailedPrecondition, match="more recent snapshots"):
            await zfs.rollback(f"{ds}@s1")
        await zfs.rollback(f"{ds}@s2")
        assert f.read_text() == "2"
        await zfs.rollback(f"{ds}@s1", destroy_newer=True)
        assert f.read_text() == "1"
        assert not await zfs.exists(f"{ds}@s2")
        got = await zfs.get([ds], ["lxcri.proxmox.io:exported"], recursive=True)
        assert got[f"{ds}@s1"]["lxcri.proxmox.io:exported"] == "tok"
        snaps = [i for i in await zfs.info([ds], recursive=True) if i.type == "snapshot"]
        assert [s.snapshot_name for s in snaps] == ["s1"]
        await zfs.destroy(ds, snapshots=True)
        assert not await zfs.exists(ds)

    asyncio.run(main())


def test_contract_clone_and_dependents(zfs: ZfsDriver, pool_name: str) -> None:
    async def main() -> None:
        ds, clone = f"{pool_name}/c", f"{pool_name}/c-clone"
        await zfs.create(ds)
        await zfs.snapshot(f"{ds}@base")
        await zfs.clone(f"{ds}@base", clone, {"quota": str(32 << 20)})
        (info,) = await zfs.info([clone])
        assert info.origin == f"{ds}@base" and info.mounted and info.quota == 32 << 20
        with pytest.raises(FailedPrecondition):
            await zfs.destroy(ds, snapshots=True)
        with pytest.raises(FailedPrecondition):
            await zfs.destroy(f"{ds}@base")
        await zfs.rename(clone, f"{pool_name}/c-renamed")
        assert await zfs.exists(f"{pool_name}/c-renamed") and not await zfs.exists(clone)
        await zfs.destroy(f"{pool_name}/c-renamed")
        await zfs.destroy(ds, snapshots=True)
        assert not await zfs.exists(ds)

    asyncio.run(main())


def test_contract_errors(zfs: ZfsDriver, pool_name: str) -> None:
    async def main() -> None:
        ds = f"{pool_name}/d"
        await zfs.create(ds)
        with pytest.raises(AlreadyExists):
            await zfs.create(ds)
        await zfs.snapshot(f"{ds}@s")
        with pytest.raises(AlreadyExists):
            await zfs.snapshot(f"{ds}@s")
        with pytest.raises(NotFound):
            await zfs.destroy(f"{pool_name}/missing")
        with pytest.raises(NotFound):
            await zfs.clone(f"{pool_name}/missing@x", f"{pool_name}/e")
        with pytest.raises(NotFound):
            await zfs.pool_status("nosuchpool")
        with pytest.raises(InvalidArgument):
            await zfs.create(f"{pool_name}/bad@name")
        assert not await zfs.exists(f"{pool_name}/e")
        await zfs.unmount(ds)
        await zfs.unmount(ds)  # idempotent
        await zfs.mount(ds)
        await zfs.mount(ds)  # idempotent
        await zfs.destroy(ds, snapshots=True)

    asyncio.run(main())


def test_contract_pool_status(zfs: ZfsDriver, pool_name: str) -> None:
    status = asyncio.run(zfs.pool_status(pool_name))
    assert status.name == pool_name and status.health == "ONLINE"
    # Sizes may be rounded (zpool list prints 480M for both on a nearly empty pool).
    assert status.size >= status.free > 0
