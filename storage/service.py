"""ZFS storage for one pool: the managers put together, with timing and events.

Used by the provisioner (container datasets), the Task API's Checkpoint and the operator CLI.
Every operation that the issue asks metrics for (snapshot and restore durations, checkpoint
successes and failures, dataset usage, pool health) records an event (:mod:`storage.metrics`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errdefs import ErrdefsError, FailedPrecondition, InvalidArgument, NotFound
from storage import criu, layout
from storage.checkpoints import Checkpoint, CheckpointManager
from storage.datasets import DatasetManager, Removed
from storage.driver import DatasetInfo, ZfsDriver
from storage.images import ImageManager
from storage.layers import LayerManager
from storage.metrics import EventLog
from storage.runner import CommandRunner
from storage.settings import StorageSettings
from storage.zfs_parse import PoolStatus

log = logging.getLogger(__name__)

#: The file a Task-API checkpoint leaves in the directory containerd gives it, and which a
#: task created "with checkpoint" finds in the directory containerd unpacked it to.
RECORD_FILE = "proxmox-lxcri-checkpoint.json"
#: Dumps (or restores) processes into (from) the CRIU image directory it is given.
Dumper = Callable[[Path], Awaitable[None]]
RECORD_VERSION = 1


@dataclass(frozen=True)
class CheckpointRecord:
    pool: str
    dataset: str
    snapshot: str
    token: str
    created: int
    criu: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, "pool": self.pool, "dataset": self.dataset,
                "snapshot": self.snapshot, "token": self.token, "created": self.created,
                "criu": self.criu}

    @staticmethod
    def load(directory: Path) -> CheckpointRecord:
        path = directory / RECORD_FILE
        try:
            data = json.loads(path.read_text())
            if data.get("version") != RECORD_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            return CheckpointRecord(str(data["pool"]), str(data["dataset"]),
                                    str(data["snapshot"]), str(data["token"]),
                                    int(data["created"]), str(data.get("criu") or ""))
        except FileNotFoundError:
            raise InvalidArgument(f"checkpoint {directory}: no {RECORD_FILE} (not a checkpoint "
                                  "of io.containerd.proxmox.v2)") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidArgument(f"checkpoint {path}: unreadable: {exc}") from None


class ZfsStorage:
    def __init__(self, driver: ZfsDriver, runner: CommandRunner, pool: str,
                 events: EventLog | None = None) -> None:
        self.driver = driver
        self.runner = runner
        self.pool = layout.check_pool(pool)
        self.events = events or EventLog(None)
        self.datasets = DatasetManager(driver, pool)
        self.layers = LayerManager(driver, runner, pool)
        self.images = ImageManager(driver, pool)
        self.checkpoints = CheckpointManager(driver, pool)

    async def pool_status(self) -> PoolStatus:
        status = await self.driver.pool_status(self.pool)
        self.events.record("pool", ok=status.health == "ONLINE", pool=status.name,
                           health=status.health, size=status.size, allocated=status.allocated,
                           free=status.free)
        return status

    # -- container datasets --------------------------------------------------------------------

    async def create_dataset(self, id: str, origin: str, settings: StorageSettings,
                             namespace: str) -> DatasetInfo:
        props = settings.zfs_props()
        props[layout.PROP_CONTAINER] = f"{namespace}/{id}"
        started = time.monotonic()
        try:
            info = await self.datasets.create_clone(id, origin, props)
        except ErrdefsError as exc:
            self.events.record("dataset_create", ok=False, container=id, error=str(exc))
            raise
        self.events.record("dataset_create", ok=True, container=id, dataset=info.name,
                           origin=origin, seconds=round(time.monotonic() - started, 4))
        return info

    async def destroy_dataset(self, id: str) -> Removed:
        started = time.monotonic()
        try:
            removed = await self.datasets.destroy(id)
        except ErrdefsError as exc:
            self.events.record("dataset_destroy", ok=False, container=id, error=str(exc))
            raise
        if removed.existed:
            self.events.record("dataset_destroy", ok=True, container=id,
                               dataset=removed.dataset, retained_as=removed.retained_as,
                               seconds=round(time.monotonic() - started, 4))
        return removed

    async def usage(self) -> list[DatasetInfo]:
        """Every container dataset's usage (and a ``usage`` event per dataset)."""
        try:
            infos = await self.driver.info([f"{self.pool}/{layout.CONTAINERS}"], recursive=True)
        except NotFound:
            return []
        out = [i for i in infos if i.type == "filesystem"
               and i.name.startswith(f"{self.pool}/{layout.CONTAINERS}/")]
        for i in out:
            self.events.record("usage", container=i.name.rsplit("/", 1)[1], used=i.used,
                               referenced=i.referenced, quota=i.quota)
        return out

    # -- checkpoints ---------------------------------------------------------------------------

    async def checkpoint(self, id: str, settings: StorageSettings, *, pid: int | None = None,
                         use_criu: bool | None = None, leave_running: bool = True,
                         export: bool = False, dumper: Dumper | None = None) -> Checkpoint:
        """Take a checkpoint of container ``id``: a snapshot of its dataset and, where CRIU
        is asked for (``use_criu``, else ``settings.criu``) and works, a dump of the process
        tree rooted at ``pid`` (or what ``dumper`` dumps into the directory it is given, e.g.
        a backend's :meth:`runtime.backend.Checkpointable.checkpoint`). ``export`` marks it
        as held by containerd (Task API).
        """
        started = time.monotonic()
        try:
            images = await self._criu_dump(id, settings, pid, use_criu, leave_running, dumper)
            props: dict[str, str] = {}
            if export:
                props[layout.PROP_EXPORTED] = uuid.uuid4().hex
            if images is not None:
                props[layout.PROP_CRIU] = str(images)
            cp = await self.checkpoints.take(id, props)
            if images is not None:
                final = images.with_name(cp.name)
                images.rename(final)
                await self.driver.set(cp.snapshot, {layout.PROP_CRIU: str(final)})
                cp = await self.checkpoints.get(id, cp.name)
        except ErrdefsError as exc:
            self.events.record("checkpoint", ok=False, container=id, error=str(exc),
                               seconds=round(time.monotonic() - started, 4))
            raise
        seconds = time.monotonic() - started
        removed = await self.checkpoints.apply_retention(id, settings.checkpoint_keep)
        self.events.record("checkpoint", ok=True, container=id, snapshot=cp.snapshot,
                           criu=bool(cp.criu), seconds=round(seconds, 4), retention_removed=removed)
        log.info("checkpoint %s of %s in %.3f s", cp.name, id, seconds)
        return cp

    async def _criu_dump(self, id: str, settings: StorageSettings, pid: int | None,
                         use_criu: bool | None, leave_running: bool,
                         dumper: Dumper | None) -> Path | None:
        mode = settings.criu if use_criu is None else ("always" if use_criu else "never")
        if mode == "never":
            return None
        status = await criu.check(self.runner)
        if not status.works:
            if mode == "always":
                raise criu.unavailable(status)
            log.info("checkpoint of %s: filesystem only, CRIU does not work here: %s", id,
                     status.reason)
            return None
        if dumper is None and (pid is None or pid <= 0):
            if mode == "always":
                raise FailedPrecondition(f"CRIU checkpoint of {id}: it has no running process")
            return None
        images = settings.criu_dir / id / f"pending-{uuid.uuid4().hex[:8]}"
        try:
            if dumper is not None:
                await dumper(images)
            else:
                assert pid is not None
                await criu.dump(self.runner, pid, images, leave_running=leave_running)
        except ErrdefsError:
            # CRIU's log stays in the error message; a half-written image directory is no use.
            shutil.rmtree(images, ignore_errors=True)
            if mode == "always":
                raise
            log.warning("checkpoint of %s: CRIU dump failed, filesystem only", id,
                        exc_info=True)
            return None
        return images

    async def restore(self, id: str, name: str | None = None) -> tuple[Checkpoint, list[str]]:
        """Roll container ``id``'s dataset back to a checkpoint (the latest by default)."""
        started = time.monotonic()
        try:
            cp, newer = await self.checkpoints.restore(id, name)
        except ErrdefsError as exc:
            self.events.record("restore", ok=False, container=id, error=str(exc))
            raise
        seconds = time.monotonic() - started
        self.events.record("restore", ok=True, container=id, snapshot=cp.snapshot,
                           seconds=round(seconds, 4), destroyed_newer=newer)
        return cp, newer

    async def restore_processes(self, cp: Checkpoint,
                                restorer: Dumper | None = None) -> int:
        """Resume the processes a CRIU checkpoint dumped (with ``restorer`` if it was dumped by
        a ``dumper``); their new root PID (0 when ``restorer`` does not say)."""
        if not cp.criu:
            raise FailedPrecondition(f"checkpoint {cp.name} has no process images (it was "
                                     "taken without CRIU)")
        status = await criu.check(self.runner)
        if not status.works:
            raise criu.unavailable(status)
        started = time.monotonic()
        if restorer is not None:
            await restorer(Path(cp.criu))
            pid = 0
        else:
            pid = await criu.restore(self.runner, Path(cp.criu))
        self.events.record("criu_restore", ok=True, snapshot=cp.snapshot, pid=pid,
                           seconds=round(time.monotonic() - started, 4))
        return pid

    async def export_checkpoint(self, id: str, settings: StorageSettings, directory: Path, *,
                                pid: int | None, leave_running: bool,
                                dumper: Dumper | None = None) -> CheckpointRecord:
        """The Task API's Checkpoint: a checkpoint containerd keeps, recorded in
        ``directory`` (which containerd then stores as the checkpoint image's content)."""
        cp = await self.checkpoint(id, settings, pid=pid, leave_running=leave_running,
                                   export=True, dumper=dumper)
        record = CheckpointRecord(self.pool, self.datasets.name(id), cp.snapshot, cp.exported,
                                  cp.created, cp.criu)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / RECORD_FILE).write_text(json.dumps(record.to_json(), indent=1))
        return record

    async def find_exported(self, record: CheckpointRecord) -> str:
        """The snapshot a Task-API checkpoint record names, wherever it is now (its dataset
        may have been retained under another name when its container was deleted)."""
        if record.pool != self.pool:
            raise FailedPrecondition(f"checkpoint is on pool {record.pool}, this runtime uses "
                                     f"{self.pool}")
        raw = await self.driver.get([self.pool], [layout.PROP_EXPORTED], recursive=True)
        for name, props in raw.items():
            if "@" in name and props.get(layout.PROP_EXPORTED) == record.token:
                return name
        raise NotFound(f"checkpoint snapshot {record.snapshot} no longer exists in pool "
                       f"{self.pool}")
