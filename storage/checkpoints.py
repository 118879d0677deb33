"""Filesystem checkpoints: ZFS snapshots ``<pool>/containers/<id>@checkpoint-<unix-seconds>``.

Take, list (creation time and size), restore the latest or a named one, delete, and keep only
the last N. A snapshot is atomic and constant time; a restore is ``zfs rollback``, which works
while the container runs (environment.md section 3). Rolling back past newer checkpoints
destroys them: ZFS can only roll back to a dataset's most recent snapshot (zfs(8) rollback -r).

Two checkpoints in the same second get ``checkpoint-<s>``, ``checkpoint-<s>-1``, …: the
``creation`` property has one-second resolution and zfs-fuse has no ``createtxg``, so the name
carries the order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from runtime.errdefs import AlreadyExists, FailedPrecondition, NotFound
from storage import layout
from storage.driver import DatasetInfo, ZfsDriver

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    name: str  # checkpoint-1764139200
    snapshot: str  # pool/containers/c1@checkpoint-1764139200
    created: int  # unix seconds (the snapshot's creation property)
    #: Bytes only this snapshot holds (what deleting it frees).
    used: int
    #: Bytes of the file system as it was at the checkpoint.
    referenced: int
    #: Token of a Task-API checkpoint containerd holds ("" if none).
    exported: str = ""
    #: Directory of the CRIU images taken with it ("" for a filesystem-only checkpoint).
    criu: str = ""

    @property
    def order(self) -> tuple[int, int]:
        return layout.checkpoint_order(self.name) or (self.created, 0)


class CheckpointManager:
    def __init__(self, driver: ZfsDriver, pool: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.driver = driver
        self.pool = layout.check_pool(pool)
        self.clock = clock

    def dataset(self, id: str) -> str:
        return layout.container_dataset(self.pool, id)

    async def take(self, id: str, props: dict[str, str] | None = None) -> Checkpoint:
        """Snapshot the container's dataset now."""
        dataset = self.dataset(id)
        seconds = int(self.clock())
        # After the newest of this second: retention may have freed a lower suffix, and
        # reusing it would put the new checkpoint before older ones.
        try:
            same = [c.order[1] for c in await self.list_for(id) if c.order[0] == seconds]
        except NotFound:
            same = []
        first = max(same) + 1 if same else 0
        for n in range(first, first + 1000):
            name = layout.checkpoint_name(seconds, n)
            try:
                await self.driver.snapshot(layout.checkpoint_snapshot(dataset, name), props)
                break
            except AlreadyExists:
                continue
            except NotFound:
                raise NotFound(f"container {id} has no dataset {dataset} (is it running with "
                               "ZFS storage?)") from None
        else:
            raise AlreadyExists(f"{dataset}: too many checkpoints in second {seconds}")
        (info,) = await self.driver.info([layout.checkpoint_snapshot(dataset, name)],
                                         user_props=(layout.PROP_EXPORTED, layout.PROP_CRIU))
        return self._from_info(info)

    @staticmethod
    def _from_info(i: DatasetInfo) -> Checkpoint:
        return Checkpoint(i.snapshot_name, i.name, i.creation, i.used, i.referenced,
                          i.user.get(layout.PROP_EXPORTED, ""), i.user.get(layout.PROP_CRIU, ""))

    async def list_for(self, id: str) -> list[Checkpoint]:
        """The container's checkpoints, oldest first."""
        dataset = self.dataset(id)
        try:
            infos = await self.driver.info([dataset], recursive=True,
                                           user_props=(layout.PROP_EXPORTED, layout.PROP_CRIU))
        except NotFound:
            raise NotFound(f"container {id} has no dataset {dataset}") from None
        out = [self._from_info(i) for i in infos
               if i.type == "snapshot" and i.name.startswith(dataset + "@")
               and layout.checkpoint_order(i.snapshot_name) is not None]
        return sorted(out, key=lambda c: c.order)

    async def get(self, id: str, name: str) -> Checkpoint:
        name = layout.check_checkpoint_name(name)
        for c in await self.list_for(id):
            if c.name == name:
                return c
        raise NotFound(f"container {id} has no checkpoint {name}")

    async def latest(self, id: str) -> Checkpoint:
        found = await self.list_for(id)
        if not found:
            raise NotFound(f"container {id} has no checkpoint to restore")
        return found[-1]

    async def restore(self, id: str, name: str | None = None) -> tuple[Checkpoint, list[str]]:
        """Roll the container's dataset back to checkpoint ``name`` (default: the latest).
        Returns it and the names of the newer checkpoints this destroyed."""
        all_ = await self.list_for(id)
        if not all_:
            raise NotFound(f"container {id} has no checkpoint to restore")
        if name is None:
            target = all_[-1]
        else:
            name = layout.check_checkpoint_name(name)
            matches = [c for c in all_ if c.name == name]
            if not matches:
                raise NotFound(f"container {id} has no checkpoint {name} (it has "
                               f"{', '.join(c.name for c in all_)})")
            target = matches[0]
        newer = [c.name for c in all_ if c.order > target.order]
        try:
            await self.driver.rollback(target.snapshot, destroy_newer=bool(newer))
        except FailedPrecondition as exc:
            raise FailedPrecondition(f"cannot restore {target.name} of container {id}: a newer "
                                     f"checkpoint is still in use ({exc})") from None
        return target, newer

    async def remove(self, id: str, name: str) -> Checkpoint:
        target = await self.get(id, name)
        try:
            await self.driver.destroy(target.snapshot)
        except FailedPrecondition as exc:
            raise FailedPrecondition(f"checkpoint {target.name} of container {id} is in use: "
                                     f"{exc}") from None
        return target

    async def apply_retention(self, id: str, keep: int) -> list[str]:
        """Destroy the oldest checkpoints beyond the last ``keep`` (0: keep all). Checkpoints
        that containerd holds (Task API) or that have clones are skipped. Returns the names
        destroyed."""
        if keep <= 0:
            return []
        removed = []
        candidates = [c for c in await self.list_for(id) if not c.exported]
        for c in candidates[:-keep] if len(candidates) > keep else []:
            try:
                await self.driver.destroy(c.snapshot)
            except (FailedPrecondition, NotFound) as exc:
                log.info("retention: keeping %s: %s", c.snapshot, exc)
                continue
            removed.append(c.name)
        return removed
