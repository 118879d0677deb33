"""Container datasets: ``<pool>/containers/<id>``, their properties, usage and destruction.

A container's dataset is always a clone (of an image's ``@base``, or of a checkpoint when a
task is restored), so creating one is constant time whatever the image size. Destroying it
takes its snapshots (checkpoints) along, except when something still depends on one: a clone
made from it (a task restored from a Task-API checkpoint) or a checkpoint containerd holds in
its content store. Then the dataset is *retained* (renamed to ``<pool>/retained/<id>-<t>`` and
unmounted), so the container's name is free and what depends on it keeps working.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from runtime.errdefs import AlreadyExists, ErrdefsError, FailedPrecondition, NotFound
from storage import layout
from storage.driver import DatasetInfo, ZfsDriver

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Removed:
    """What :meth:`DatasetManager.destroy` did: destroyed, retained under a new name, or
    nothing (it did not exist)."""

    dataset: str
    retained_as: str | None = None
    existed: bool = True


async def ensure_filesystem(driver: ZfsDriver, name: str) -> None:
    """Create ``name`` (and its parents) unless it exists. Concurrent creators (other shims)
    race: zfs-fuse may then fail the loser's mount with "Input/output error" although the
    dataset exists, so any failure is checked against what is there."""
    if await driver.exists(name):
        return
    try:
        await driver.create(name, parents=True)
    except ErrdefsError:
        if not await driver.exists(name):
            raise
    # Whether it is mounted does not matter: children mount below its mountpoint regardless.


class DatasetManager:
    def __init__(self, driver: ZfsDriver, pool: str) -> None:
        self.driver = driver
        self.pool = layout.check_pool(pool)
        self._parents: set[str] = set()

    def name(self, id: str) -> str:
        return layout.container_dataset(self.pool, id)

    async def ensure_parent(self, child: str) -> None:
        """Create ``<pool>/<child>`` (e.g. ``containers``) unless it exists; concurrent
        creators (other shims) may win the race, which is fine. Checked once per manager: it
        is never destroyed, and a clone below a missing parent fails with NotFound anyway."""
        if child in self._parents:
            return
        await ensure_filesystem(self.driver, f"{self.pool}/{child}")
        self._parents.add(child)

    async def create_clone(self, id: str, origin: str, props: dict[str, str]) -> DatasetInfo:
        """Clone ``origin`` as the container's dataset, mounted, with ``props`` (quota,
        reservation, user properties). Leaves nothing behind on failure."""
        name = self.name(id)
        await self.ensure_parent(layout.CONTAINERS)
        try:
            await self.driver.clone(origin, name, props)
        except AlreadyExists:
            raise AlreadyExists(f"dataset {name} exists: container {id} already has a root "
                                "filesystem (another namespace, or a leftover of a crash)"
                                ) from None
        try:
            info = await self.info(id)
            if not info.mounted:
                await self.driver.mount(name)
                info = await self.info(id)
            if info.mountpoint is None:
                raise FailedPrecondition(f"dataset {name} has no mountpoint (the pool's "
                                         "mountpoint property is none or legacy)")
        except BaseException:
            await self._destroy_quietly(name)
            raise
        return info

    async def info(self, id: str) -> DatasetInfo:
        found = await self.driver.info([self.name(id)])
        if not found:
            raise NotFound(f"dataset {self.name(id)} does not exist")
        return found[0]

    async def exists(self, id: str) -> bool:
        return await self.driver.exists(self.name(id))

    async def dependents(self, dataset: str) -> dict[str, list[str]]:
        """Snapshot of ``dataset`` → the datasets cloned from it, anywhere in the pool.

        zfs-fuse has no ``clones`` property, so this reads every dataset's ``origin``."""
        raw = await self.driver.get([self.pool], ["origin"], recursive=True)
        out: dict[str, list[str]] = {}
        for name, props in raw.items():
            origin = props.get("origin", "-")
            if origin.startswith(dataset + "@"):
                out.setdefault(origin, []).append(name)
        return out

    async def destroy(self, id: str) -> Removed:
        """Destroy the container's dataset and checkpoints (or retain it, see module doc).
        Idempotent: a missing dataset is not an error."""
        return await self.destroy_dataset(self.name(id))

    async def destroy_dataset(self, name: str) -> Removed:
        if not await self.driver.exists(name):
            return Removed(name, existed=False)
        snaps = await self.driver.get([name], [layout.PROP_EXPORTED], recursive=True)
        held = {s for s, p in snaps.items() if "@" in s and p.get(layout.PROP_EXPORTED, "-")
                != "-"}
        held |= set(await self.dependents(name))
        if not held:
            await self.driver.destroy(name, snapshots=True)
            return Removed(name)
        retained = f"{self.pool}/{layout.RETAINED}/{name.rsplit('/', 1)[1]}-{time.time_ns()}"
        log.info("dataset %s: keeping it as %s, checkpoints %s are still needed", name,
                 retained, ", ".join(sorted(held)))
        await self.ensure_parent(layout.RETAINED)
        await self.driver.unmount(name)
        await self.driver.rename(name, retained)
        # Not mounted again (canmount=noauto): only its snapshots matter now.
        await self.driver.set(retained, {"canmount": "noauto"})
        await self.driver.unmount(retained)
        return Removed(name, retained_as=retained)

    async def _destroy_quietly(self, name: str) -> None:
        try:
            await self.driver.destroy(name, snapshots=True)
        except NotFound:
            pass
        except Exception:  # the caller's error matters more; the log says what stayed
            log.exception("cannot destroy %s after a failed create", name)
