"""The storage layer against a real zfs-fuse pool on a sparse file (no containerd).

Driver, layer cache, provisioner, checkpoints, images, clean-up: each test has its own pool
(tests/harness/zfs.py), destroyed afterwards even on failure.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from runtime.errdefs import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from runtime.types import CreateConfig, Mount
from storage import cleanup as storage_cleanup
from storage import criu
from storage.checkpoints import CheckpointManager
from storage.layers import ImageSource, LayerManager
from storage.provisioner import CHECKPOINT_OPTION, StorageProvisioner
from storage.runner import Result, ThreadRunner
from storage.service import RECORD_FILE, ZfsStorage
from storage.settings import StorageSettings
from storage.state import read_state
from storage.zfs_cli import ZfsCli
from tests.harness.rootfs import populate_busybox_rootfs
from tests.harness.zfs import TestPool, zfs_fuse_fixture, zfs_pool_fixture  # noqa: F401

pytestmark = pytest.mark.integration


class CountingRunner(ThreadRunner):
    """Runs commands for real and counts them by program name."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    async def run(self, argv: Sequence[str], *, input: bytes | None = None,
                  timeout: float | None = 30.0) -> Result:
        name = os.path.basename(argv[0])
        self.counts[name] = self.counts.get(name, 0) + 1
        return await super().run(argv, input=input, timeout=timeout)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A busybox root filesystem standing in for a committed snapshotter layer."""
    root = tmp_path / "layer"
    populate_busybox_rootfs(root)
    (root / "etc/image-marker").write_text("from the image\n")
    return root


def make_config(tmp_path: Path, id: str, pool: str | None, image: Path, *,
                annotations: dict[str, str] | None = None,
                storage: dict[str, Any] | None = None,
                options: dict[str, Any] | None = None) -> CreateConfig:
    upper, work = tmp_path / f"{id}-upper", tmp_path / f"{id}-work"
    upper.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    section: dict[str, Any] = {"zfs_pool": pool} if pool else {}
    section.update(storage or {})
    return CreateConfig(
        id=id, namespace="default", bundle=tmp_path / id,
        spec={"ociVersion": "1.0.2", "root": {"path": "rootfs"},
              "process": {"args": ["/bin/sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
              "annotations": annotations or {}},
        rootfs=(Mount("overlay", "overlay", "", (f"lowerdir={image}", f"upperdir={upper}",
                                                  f"workdir={work}")),),
        state_dir=tmp_path / "state" / id,
        settings={"storage": section},
        options=options or {},
    )


def zfs_names(pool: TestPool) -> list[str]:
    return pool.datasets()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- driver -------------------------------------------------------------------------------------


def test_driver_round_trip_and_errors(zfs_pool: TestPool) -> None:
    async def main() -> None:
        zfs = ZfsCli(ThreadRunner())
        ds = f"{zfs_pool.name}/d1"
        await zfs.create(ds, {"quota": str(64 << 20)})
        info = (await zfs.info([ds]))[0]
        assert info.quota == 64 << 20 and info.mounted and info.mountpoint
        Path(info.mountpoint, "f").write_text("one")
        await zfs.snapshot(f"{ds}@s1")
        Path(info.mountpoint, "f").write_text("two")
        await zfs.rollback(f"{ds}@s1")
        assert Path(info.mountpoint, "f").read_text() == "one"
        await zfs.clone(f"{ds}@s1", f"{zfs_pool.name}/c1")
        assert (await zfs.info([f"{zfs_pool.name}/c1"]))[0].origin == f"{ds}@s1"

        with pytest.raises(AlreadyExists):
            await zfs.create(ds)
        with pytest.raises(NotFound):
            await zfs.destroy(f"{zfs_pool.name}/nope")
        with pytest.raises(FailedPrecondition, match="dependent clones"):
            await zfs.destroy(ds, snapshots=True)
        with pytest.raises(InvalidArgument):
            await zfs.create(f"{zfs_pool.name}/q", {"quota": "lots"})
        assert not await zfs.exists(f"{zfs_pool.name}/q")
        # zfs-fuse answers "busy" to destroying a just-mounted dataset; the driver copes.
        await zfs.destroy(f"{zfs_pool.name}/c1")
        await zfs.destroy(ds, snapshots=True)
        assert zfs_names(zfs_pool) == [zfs_pool.name]

    run(main())


# -- layers -------------------------------------------------------------------------------------


def test_image_is_populated_once_even_by_concurrent_creates(zfs_pool: TestPool,
                                                            image_dir: Path) -> None:
    async def main() -> None:
        runner = CountingRunner()
        zfs = ZfsCli(runner)
        managers = [LayerManager(zfs, runner, zfs_pool.name) for _ in range(4)]
        source = ImageSource((str(image_dir),))
        bases = await asyncio.gather(*(m.ensure(source) for m in managers))
        assert len(set(bases)) == 1
        assert runner.counts.get("cp") == 1
        again = await managers[0].ensure(source)
        assert again == bases[0] and runner.counts.get("cp") == 1
        images = [n for n in zfs_names(zfs_pool) if "/images/" in n and "@" not in n]
        assert len(images) == 1

    run(main())


def test_image_of_several_layers_is_their_merge(zfs_pool: TestPool, image_dir: Path,
                                                tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir()
    (top / "etc").mkdir()
    (top / "etc/image-marker").write_text("from the top layer\n")
    os.mknod(top / "etc/group", 0o600 | 0o020000, os.makedev(0, 0))  # an overlay whiteout

    async def main() -> None:
        runner = ThreadRunner()
        storage = ZfsStorage(ZfsCli(runner), runner, zfs_pool.name)
        base = await storage.layers.ensure(ImageSource((str(top), str(image_dir))))
        info = await storage.create_dataset("m1", base, StorageSettings(pool=zfs_pool.name),
                                            "default")
        root = Path(info.mountpoint or "")
        assert (root / "etc/image-marker").read_text() == "from the top layer\n"
        assert not (root / "etc/group").exists()
        assert (root / "bin/busybox").exists()
        await storage.destroy_dataset("m1")

    run(main())


# -- provisioner --------------------------------------------------------------------------------


def test_provisioner_clones_the_image_and_release_destroys(zfs_pool: TestPool, image_dir: Path,
                                                           tmp_path: Path) -> None:
    async def main() -> None:
        prov = StorageProvisioner(ThreadRunner())
        c1 = make_config(tmp_path, "p1", zfs_pool.name, image_dir)
        c2 = make_config(tmp_path, "p2", zfs_pool.name, image_dir)
        out1 = await prov.prepare(c1)
        out2 = await prov.prepare(c2)
        names = zfs_names(zfs_pool)
        ds1, ds2 = f"{zfs_pool.name}/containers/p1", f"{zfs_pool.name}/containers/p2"
        assert ds1 in names and ds2 in names
        assert len([n for n in names if "/images/" in n and "@" not in n]) == 1
        (m1,) = out1.rootfs
        assert m1.type == "bind" and "rbind" in m1.options
        root1 = Path(m1.source)
        assert (root1 / "etc/image-marker").read_text() == "from the image\n"
        (root1 / "written-by-p1").write_text("mine")
        assert not Path(out2.rootfs[0].source, "written-by-p1").exists()
        assert not (image_dir / "written-by-p1").exists()
        state = read_state(c1.state_dir)
        assert state and state["dataset"] == ds1
        await prov.release(out1)
        await prov.release(out1)  # idempotent
        await prov.release(out2)
        names = zfs_names(zfs_pool)
        assert not [n for n in names if "/containers/" in n]
        assert read_state(c1.state_dir) is None

    run(main())


def test_without_a_pool_the_config_passes_through(tmp_path: Path, image_dir: Path) -> None:
    config = make_config(tmp_path, "plain", None, image_dir)
    assert run(StorageProvisioner(ThreadRunner()).prepare(config)) is config


def test_storage_annotation_without_a_pool_is_refused(tmp_path: Path, image_dir: Path) -> None:
    config = make_config(tmp_path, "plain", None, image_dir,
                         annotations={"lxcri.proxmox.io/quota": "1G"})
    with pytest.raises(FailedPrecondition, match="lxcri.proxmox.io/quota: needs ZFS storage"):
        run(StorageProvisioner(ThreadRunner()).prepare(config))


def test_quota_from_annotation_is_enforced(zfs_pool: TestPool, image_dir: Path,
                                           tmp_path: Path) -> None:
    async def main() -> None:
        prov = StorageProvisioner(ThreadRunner())
        config = make_config(tmp_path, "q1", zfs_pool.name, image_dir,
                             annotations={"lxcri.proxmox.io/quota": "8M"})
        out = await prov.prepare(config)
        try:
            big = Path(out.rootfs[0].source, "big")
            with pytest.raises(OSError) as exc:
                with open(big, "wb") as f:
                    for _ in range(16):
                        f.write(os.urandom(1 << 20))  # random: compression cannot shrink it
                        f.flush()
                        os.fsync(f.fileno())
            assert exc.value.errno in (errno.EDQUOT, errno.ENOSPC)
        finally:
            await prov.release(out)

    run(main())


@pytest.mark.parametrize("annotations, message", [
    ({"lxcri.proxmox.io/quota": "lots"}, "lxcri.proxmox.io/quota: 'lots' is not a size"),
    ({"lxcri.proxmox.io/quota": "10M", "lxcri.proxmox.io/reservation": "20M"},
     "is more than the quota"),
])
def test_bad_input_is_refused_and_leaves_nothing(zfs_pool: TestPool, image_dir: Path,
                                                 tmp_path: Path, annotations: dict[str, str],
                                                 message: str) -> None:
    config = make_config(tmp_path, "bad", zfs_pool.name, image_dir, annotations=annotations)
    with pytest.raises(InvalidArgument, match=message):
        run(StorageProvisioner(ThreadRunner()).prepare(config))
    assert zfs_names(zfs_pool) == [zfs_pool.name]
    assert read_state(config.state_dir) is None


def test_failed_image_population_leaves_nothing(zfs_pool: TestPool, tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    missing.mkdir()
    config = make_config(tmp_path, "f1", zfs_pool.name, missing)
    missing.rmdir()
    with pytest.raises(NotFound, match="rootfs layer"):
        run(StorageProvisioner(ThreadRunner()).prepare(config))
    assert not [n for n in zfs_names(zfs_pool) if "/containers/" in n or "/images/" in n]


def test_existing_dataset_is_reported_and_kept(zfs_pool: TestPool, image_dir: Path,
                                               tmp_path: Path) -> None:
    async def main() -> None:
        prov = StorageProvisioner(ThreadRunner())
        first = await prov.prepare(make_config(tmp_path, "dup", zfs_pool.name, image_dir))
        other = make_config(tmp_path / "other", "dup", zfs_pool.name, image_dir)
        with pytest.raises(AlreadyExists, match="containers/dup"):
            await prov.prepare(other)
        assert f"{zfs_pool.name}/containers/dup" in zfs_names(zfs_pool)
        await prov.release(first)

    (tmp_path / "other").mkdir()
    run(main())


def test_delete_action_cleanup_after_a_crash(zfs_pool: TestPool, image_dir: Path,
                                             tmp_path: Path) -> None:
    async def main() -> CreateConfig:
        prov = StorageProvisioner(ThreadRunner())
        config = make_config(tmp_path, "crash", zfs_pool.name, image_dir)
        out = await prov.prepare(config)
        await ZfsStorage(ZfsCli(ThreadRunner()), ThreadRunner(), zfs_pool.name
                         ).checkpoints.take("crash")
        return out

    config = run(main())
    # The daemon is gone; the stdlib clean-up of the delete action does the rest.
    assert storage_cleanup.cleanup(config.state_dir).startswith("destroyed")
    assert not [n for n in zfs_names(zfs_pool) if "/containers/" in n]
    assert storage_cleanup.cleanup(config.state_dir) == ""


# -- checkpoints --------------------------------------------------------------------------------


@pytest.fixture
def container(zfs_pool: TestPool, image_dir: Path, tmp_path: Path) -> Iterator[tuple[ZfsStorage,
                                                                                    Path]]:
    runner = ThreadRunner()
    storage = ZfsStorage(ZfsCli(runner), runner, zfs_pool.name)
    settings = StorageSettings(pool=zfs_pool.name)

    async def make() -> Path:
        base = await storage.layers.ensure(ImageSource((str(image_dir),)))
        info = await storage.create_dataset("k1", base, settings, "default")
        return Path(info.mountpoint or "")

    root = run(make())
    yield storage, root
    run(storage.destroy_dataset("k1"))


def test_checkpoint_write_restore(container: tuple[ZfsStorage, Path]) -> None:
    storage, root = container
    settings = StorageSettings(pool=storage.pool, criu="never")

    async def main() -> None:
        (root / "state").write_text("v1")
        cp1 = await storage.checkpoint("k1", settings)
        assert cp1.name.startswith("checkpoint-")
        (root / "state").write_text("v2")
        (root / "extra").write_text("later")
        cp2 = await storage.checkpoint("k1", settings)
        (root / "state").write_text("v3")

        restored, newer = await storage.restore("k1")
        assert restored.name == cp2.name and newer == []
        assert (root / "state").read_text() == "v2" and (root / "extra").exists()

        restored, newer = await storage.restore("k1", cp1.name)
        assert restored.name == cp1.name and newer == [cp2.name]
        assert (root / "state").read_text() == "v1" and not (root / "extra").exists()
        listed = await storage.checkpoints.list_for("k1")
        assert [c.name for c in listed] == [cp1.name]
        assert listed[0].created > 0 and listed[0].referenced > 0

        with pytest.raises(NotFound, match="no checkpoint checkpoint-1"):
            await storage.restore("k1", "checkpoint-1")
        with pytest.raises(InvalidArgument, match="not a checkpoint name"):
            await storage.restore("k1", "base")

    run(main())


def test_retention_keeps_the_last_n(container: tuple[ZfsStorage, Path]) -> None:
    storage, root = container
    settings = StorageSettings(pool=storage.pool, criu="never", checkpoint_keep=2)

    async def main() -> None:
        taken = []
        for i in range(4):
            (root / "n").write_text(str(i))
            taken.append((await storage.checkpoint("k1", settings)).name)
        kept = [c.name for c in await storage.checkpoints.list_for("k1")]
        assert kept == taken[-2:]
        await storage.checkpoints.remove("k1", kept[0])
        assert [c.name for c in await storage.checkpoints.list_for("k1")] == taken[-1:]

    run(main())


def test_criu_checkpoint_fails_with_criu_reason_here(container: tuple[ZfsStorage, Path]) -> None:
    storage, _ = container
    status = run(criu.check(ThreadRunner(), cached=False))
    if status.works:
        pytest.skip("CRIU works on this kernel; the failure path needs one where it does not")
    settings = StorageSettings(pool=storage.pool, criu="always")
    with pytest.raises(FailedPrecondition) as exc:
        run(storage.checkpoint("k1", settings, pid=os.getpid()))
    assert status.reason and status.reason in str(exc.value)
    assert "vdso" in str(exc.value).lower() or "criu" in str(exc.value).lower()
    # The filesystem checkpoint is still offered.
    cp = run(storage.checkpoint("k1", replace(settings, criu="auto"), pid=os.getpid()))
    assert cp.criu == ""


def test_task_api_checkpoint_survives_its_container(zfs_pool: TestPool, image_dir: Path,
                                                    tmp_path: Path) -> None:
    async def main() -> None:
        prov = StorageProvisioner(ThreadRunner())
        config = await prov.prepare(make_config(tmp_path, "t1", zfs_pool.name, image_dir,
                                                storage={"criu": "never"}))
        root = Path(config.rootfs[0].source)
        (root / "data").write_text("at checkpoint")
        cpdir = tmp_path / "ctd-checkpoint"
        await prov.checkpoint(config, None, cpdir, leave_running=True)
        assert (cpdir / RECORD_FILE).exists()
        (root / "data").write_text("after")
        await prov.release(config)  # the task is deleted; containerd keeps the checkpoint
        names = zfs_names(zfs_pool)
        assert not [n for n in names if "/containers/" in n]
        assert [n for n in names if "/retained/" in n]

        restored = await prov.prepare(make_config(tmp_path, "t1", zfs_pool.name, image_dir,
                                                  options={CHECKPOINT_OPTION: str(cpdir)}))
        assert Path(restored.rootfs[0].source, "data").read_text() == "at checkpoint"
        await prov.release(restored)

    run(main())


# -- images -------------------------------------------------------------------------------------


def test_images_list_and_prune(zfs_pool: TestPool, image_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-image"
    shutil.copytree(image_dir, other, symlinks=True)

    async def main() -> None:
        runner = ThreadRunner()
        storage = ZfsStorage(ZfsCli(runner), runner, zfs_pool.name)
        settings = StorageSettings(pool=zfs_pool.name)
        used = await storage.layers.ensure(ImageSource((str(image_dir),)))
        await storage.layers.ensure(ImageSource((str(other),)))
        await storage.create_dataset("u1", used, settings, "default")
        images = await storage.images.scan()
        assert len(images) == 2
        by_base = {f"{i.dataset}@base": i for i in images}
        assert by_base[used].users == (f"{zfs_pool.name}/containers/u1",)
        assert all(i.referenced > 1 << 20 for i in images)  # busybox is about 2 MB
        pruned = await storage.images.prune()
        assert [f"{p.dataset}@base" for p in pruned] != [used] and len(pruned) == 1
        assert [f"{i.dataset}@base" for i in await storage.images.scan()] == [used]
        await storage.destroy_dataset("u1")
        assert len(await storage.images.prune()) == 1
        assert await storage.images.scan() == []

    run(main())


def test_checkpoint_manager_names_within_one_second(zfs_pool: TestPool) -> None:
    async def main() -> None:
        zfs = ZfsCli(ThreadRunner())
        await zfs.create(f"{zfs_pool.name}/containers/s1", parents=True)
        mgr = CheckpointManager(zfs, zfs_pool.name, clock=lambda: 1_700_000_000.5)
        names = [(await mgr.take("s1")).name for _ in range(3)]
        assert names == ["checkpoint-1700000000", "checkpoint-1700000000-1",
                         "checkpoint-1700000000-2"]
        assert (await mgr.latest("s1")).name == names[-1]
        await zfs.destroy(f"{zfs_pool.name}/containers/s1", snapshots=True)

    run(main())


# -- the Supervisor's checkpoint path (Task API), with a fake backend ----------------------------


def test_supervisor_checkpoint_exit_and_restore(zfs_pool: TestPool, image_dir: Path,
                                                tmp_path: Path) -> None:
    from runtime import events as ev
    from runtime.store import Store
    from runtime.supervisor import Supervisor
    from tests.fakes.backend import FakeBackend

    async def main() -> None:
        backend = FakeBackend()
        sup = Supervisor(backend, ev.MemorySink(), Store(tmp_path / "root"), "default",
                         provisioners=(StorageProvisioner(ThreadRunner()),))
        config = make_config(tmp_path, "s1", zfs_pool.name, image_dir,
                             storage={"criu": "never"})
        config = replace(config, state_dir=Store(tmp_path / "root").container_dir("default",
                                                                                  "s1"))
        await sup.create(config)
        await sup.start("s1")
        root = Path(f"{zfs_pool.mountpoint}/containers/s1")
        (root / "data").write_text("at checkpoint")
        cpdir = tmp_path / "cp"
        await sup.checkpoint("s1", cpdir, exit=True)
        assert json.loads((cpdir / RECORD_FILE).read_text())["dataset"] == \
            f"{zfs_pool.name}/containers/s1"
        assert backend.handles["s1"].signals == [(9, True)]  # --exit
        (root / "data").write_text("after")
        assert (await sup.wait("s1")).status == 137
        await sup.delete("s1")
        assert not [n for n in zfs_names(zfs_pool) if "/containers/" in n]

        again = replace(config, options={CHECKPOINT_OPTION: str(cpdir)})
        await sup.create(again)
        assert (root / "data").read_text() == "at checkpoint"
        backend.handles["s1"].exit(0)
        await sup.wait("s1")
        await sup.delete("s1")
        with pytest.raises(NotFound):
            await sup.checkpoint("s1", cpdir)
        await sup.aclose()

    run(main())


def test_supervisor_checkpoint_without_zfs_is_not_implemented(tmp_path: Path) -> None:
    from runtime import events as ev
    from runtime.errdefs import NotImplementedErr
    from runtime.store import Store
    from runtime.supervisor import Supervisor
    from tests.fakes.backend import FakeBackend

    async def main() -> None:
        sup = Supervisor(FakeBackend(), ev.MemorySink(), Store(tmp_path), "default")
        cfg = CreateConfig(id="n1", namespace="default", bundle=tmp_path,
                           spec={"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                                 "process": {"args": ["true"], "cwd": "/",
                                             "user": {"uid": 0, "gid": 0}}},
                           state_dir=tmp_path / "n1")
        await sup.create(cfg)
        with pytest.raises(NotImplementedErr, match="needs ZFS storage"):
            await sup.checkpoint("n1", tmp_path / "cp")
        await sup.aclose()

    run(main())
