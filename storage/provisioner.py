"""The storage provisioner: a container's root filesystem as a ZFS dataset.

Implements :class:`runtime.provision.Provisioner`. Where ``[storage] zfs_pool`` is configured,
``prepare`` clones the image's ``@base`` (populating it the first time) as
``<pool>/containers/<id>`` with the container's quota and reservation, and replaces the task's
rootfs mounts with one bind mount of the dataset's mountpoint; the backend mounts that as it
would containerd's overlay. Without a pool the config passes through untouched (the plain
directory rootfs). ``release`` destroys the dataset and its checkpoints.

What was made is recorded in ``<state_dir>/storage.json`` *before* it is made, so the
short-lived ``delete`` action (:mod:`storage.cleanup`) can destroy it after a shim crash.

This is the bridge between the lifecycle core and storage, so besides errdefs it imports
``runtime.types``, ``runtime.config`` and ``runtime.oci`` (all leaves, standard library only).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime import config as runtime_config
from runtime.errdefs import ErrdefsError, FailedPrecondition, InvalidArgument, NotFound
from runtime.oci import spec_annotations
from runtime.types import CreateConfig, Mount, RestoreSource
from storage import settings as storage_settings
from storage.runner import CommandRunner
from storage.settings import StorageSettings
from storage.state import read_state, remove_state, write_state

if TYPE_CHECKING:
    from runtime.backend import Checkpointable

    # The ZFS machinery (~1.9 MB of modules) loads only when a pool is configured: every shim
    # daemon builds this provisioner, most never use ZFS (DESIGN.md section 2: stay small).
    from storage import layers
    from storage.checkpoints import Checkpoint
    from storage.metrics import EventLog
    from storage.service import CheckpointRecord, ZfsStorage

log = logging.getLogger(__name__)

#: Key of ``CreateConfig.options`` under which the Task service passes the directory of the
#: checkpoint a task is created from (``CreateTaskRequest.checkpoint``).
CHECKPOINT_OPTION = "lxcri.checkpoint_path"
#: Annotations (``lxcri.proxmox.io/<key>``) that only mean something with ZFS storage.
STORAGE_ANNOTATIONS = frozenset({"quota", "reservation", "checkpoint-keep", "criu"})


def settings_for(config: CreateConfig) -> StorageSettings:
    """The container's storage settings: ``[storage]`` plus its allowed annotations."""
    base = storage_settings.from_section(runtime_config.section(config.settings, "storage"))
    overrides = runtime_config.overrides(config.settings, spec_annotations(config.spec))
    return storage_settings.with_overrides(base, overrides)


class StorageProvisioner:
    name = "storage"

    def __init__(self, runner: CommandRunner, events_path: Path | None = None) -> None:
        self.runner = runner
        self._events_path = events_path
        self._events: EventLog | None = None
        self._storages: dict[tuple[str, str], ZfsStorage] = {}

    @property
    def events(self) -> EventLog:
        if self._events is None:
            from storage.metrics import EventLog

            self._events = EventLog(self._events_path)
        return self._events

    def storage(self, settings: StorageSettings) -> ZfsStorage:
        """The :class:`ZfsStorage` of ``settings.pool`` (one driver per pool and kind)."""
        assert settings.pool is not None
        key = (settings.pool, settings.driver)
        if key not in self._storages:
            from storage.drivers import open_driver
            from storage.service import ZfsStorage

            driver = open_driver(self.runner, settings.driver)
            self._storages[key] = ZfsStorage(driver, self.runner, settings.pool, self.events)
        return self._storages[key]

    async def prepare(self, config: CreateConfig) -> CreateConfig:
        settings = settings_for(config)
        restore_dir = config.options.get(CHECKPOINT_OPTION)
        if settings.pool is None:
            section = config.settings.get("backend")
            if restore_dir and isinstance(section, dict) and section.get("type") == "proxmox":
                return config  # its checkpoints are CT snapshots: the backend answers
            if restore_dir:
                raise FailedPrecondition("restoring a task from a checkpoint needs ZFS storage "
                                         "([storage] zfs_pool in config.toml)")
            asked = sorted(STORAGE_ANNOTATIONS & set(runtime_config.overrides(
                config.settings, spec_annotations(config.spec))))
            if asked:
                # A user who asked for a quota must learn that it cannot be applied.
                raise FailedPrecondition(f"annotation {runtime_config.ANNOTATION_PREFIX}"
                                         f"{asked[0]}: needs ZFS storage, and no pool is "
                                         "configured ([storage] zfs_pool)")
            return config
        storage = self.storage(settings)
        dataset = storage.datasets.name(config.id)  # validates the id as a dataset name
        write_state(config.state_dir, {"pool": settings.pool, "dataset": dataset,
                                       "namespace": config.namespace, "id": config.id,
                                       "driver": storage.driver.kind})
        record = None
        if restore_dir:
            from storage.service import CheckpointRecord

            record = CheckpointRecord.load(Path(str(restore_dir)))
        try:
            info, origin = await self._make(storage, config, settings, record)
        except BaseException:
            remove_state(config.state_dir)
            raise
        write_state(config.state_dir, {"pool": settings.pool, "dataset": dataset,
                                       "namespace": config.namespace, "id": config.id,
                                       "driver": storage.driver.kind, "origin": origin,
                                       "mountpoint": info.mountpoint})
        assert info.mountpoint is not None
        log.info("container %s: root filesystem %s (clone of %s)", config.id, dataset, origin)
        try:
            checkpointable, source = await self._criu_plan(config, settings, record)
        except BaseException:
            await self.release(config)
            raise
        return replace(config, rootfs=(Mount("bind", info.mountpoint, "", ("rbind", "rw")),),
                       checkpointable=checkpointable, restore=source)

    async def _criu_plan(self, config: CreateConfig, settings: StorageSettings,
                         record: CheckpointRecord | None) -> tuple[bool, RestoreSource | None]:
        """Whether the backend should make the container checkpointable (for LXC: run it
        with the in-container init, which CRIU needs to dump it), and the process images to
        restore it from, if any.

        Checkpointable where checkpoints would dump processes: ``criu`` is not "never" and
        ``criu check`` passes. A checkpoint with process images restores them where CRIU
        works; elsewhere only its filesystem is restored ("auto", logged) or the create fails
        naming CRIU's reason ("always")."""
        from storage import criu

        if settings.criu == "never":
            return False, None
        status = await criu.check(self.runner)
        images = None
        if record is not None:
            if record.criu:
                if status.works and Path(record.criu).is_dir():
                    images = Path(record.criu)
                elif settings.criu == "always":
                    raise criu.unavailable(status) if not status.works else NotFound(
                        f"checkpoint {record.snapshot}: CRIU images {record.criu} are gone")
                else:
                    log.warning("container %s: restoring only the filesystem of %s (CRIU "
                                "images %s: %s)", config.id, record.snapshot, record.criu,
                                status.reason or "missing")
        return status.works, (RestoreSource(images, "criu") if images is not None else None)

    async def _make(self, storage: ZfsStorage, config: CreateConfig, settings: StorageSettings,
                    record: CheckpointRecord | None) -> tuple[Any, str]:
        from storage import layers

        source = None
        if record is not None:
            origin = await storage.find_exported(record)
        else:
            source = self._source(config)
            origin = await storage.layers.ensure(source)
        for attempt in (1, 2):
            try:
                info = await storage.create_dataset(config.id, origin, settings,
                                                    config.namespace)
                break
            except NotFound:
                # `images prune` destroyed the image between ensure() and the clone.
                if source is None or attempt == 2:
                    raise
                origin = await storage.layers.ensure(source)
        if source is not None and layers.has_entries(source.upper):
            try:
                n = await asyncio.to_thread(layers.apply_upper, str(source.upper),
                                            str(info.mountpoint))
            except (OSError, ErrdefsError) as exc:
                await storage.destroy_dataset(config.id)
                raise FailedPrecondition(f"rootfs: cannot carry the container's writable layer "
                                         f"over to its dataset: {exc}") from exc
            log.info("container %s: %d entries of its writable layer copied", config.id, n)
        return info, origin

    @staticmethod
    def _source(config: CreateConfig) -> layers.ImageSource:
        from storage import layers

        if config.rootfs:
            return layers.image_source(config.rootfs)
        # No mounts: the bundle's own root.path directory is the image (copied, not shared).
        root = config.spec.get("root") or {}
        path = root.get("path", "rootfs") if isinstance(root, dict) else "rootfs"
        full = Path(path) if str(path).startswith("/") else config.bundle / str(path)
        if not full.is_dir():
            raise InvalidArgument(f"root.path: {full} is not a directory")
        return layers.ImageSource((str(full),))

    async def release(self, config: CreateConfig) -> None:
        state = read_state(config.state_dir)
        if state is None:
            return
        settings = settings_for(config)
        pool = str(state["pool"])
        storage = self.storage(replace(settings, pool=pool))
        await storage.destroy_dataset(str(state["id"]))
        remove_state(config.state_dir)
        log.info("container %s: dataset %s destroyed", config.id, state["dataset"])

    # -- checkpoints (Task API) ----------------------------------------------------------------

    async def checkpoint(self, config: CreateConfig, pid: int | None, directory: Path, *,
                         leave_running: bool,
                         target: Checkpointable | None = None) -> Checkpoint:
        """The Task API's Checkpoint of a container with ZFS storage: a snapshot of its
        dataset and, where CRIU works, the processes of ``target`` (the backend's running
        container, when it is :class:`runtime.backend.Checkpointable`), dumped by the backend
        itself, which knows its container's namespaces, mounts and cgroups."""
        settings = settings_for(config)
        if settings.pool is None or read_state(config.state_dir) is None:
            raise FailedPrecondition(f"container {config.id} has no ZFS dataset to checkpoint "
                                     "(set [storage] zfs_pool in config.toml)")
        storage = self.storage(settings)
        dumper = None
        if pid is not None and target is not None:
            handle = target

            async def dumper(images: Path) -> None:
                await handle.checkpoint(images, leave_running=leave_running)

        record = await storage.export_checkpoint(config.id, settings, directory, pid=pid,
                                                 leave_running=leave_running, dumper=dumper)
        return await storage.checkpoints.get(config.id, record.snapshot)
