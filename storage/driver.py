"""The ZFS driver interface shared by the command-line driver and the libzfs_core driver.

Names are full ZFS names (``pool/containers/c1``, ``pool/containers/c1@checkpoint-1764139200``).
Every method raises an error of :mod:`runtime.errdefs`: NotFound for a missing dataset or pool,
AlreadyExists, FailedPrecondition (has clones, newer snapshots, out of space), InvalidArgument
(bad name or property), Unavailable (no ZFS daemon or module, still busy after retries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from storage.zfs_parse import PoolStatus

#: Properties read for every dataset and snapshot listing (both implementations know them).
INFO_PROPS = ("type", "used", "referenced", "available", "quota", "reservation", "origin",
              "creation", "mountpoint", "mounted")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    type: str  # filesystem | snapshot | volume
    used: int
    referenced: int
    available: int | None
    quota: int | None  # None = no quota ("none", or not applicable to a snapshot)
    reservation: int | None
    origin: str | None  # the snapshot a clone was made from
    creation: int  # unix seconds
    mountpoint: str | None
    mounted: bool
    user: Mapping[str, str]  # the user properties that were asked for (absent ones omitted)

    @property
    def snapshot_name(self) -> str:
        """``checkpoint-1`` of ``pool/ds@checkpoint-1`` ("" for a dataset)."""
        return self.name.partition("@")[2]


class ZfsDriver(Protocol):
    #: "cli" or "lzc", shown by the operator CLI and in events.
    kind: str

    async def pool_status(self, pool: str) -> PoolStatus: ...

    async def exists(self, name: str) -> bool: ...

    async def create(self, name: str, props: Mapping[str, str] | None = None, *,
                     parents: bool = False) -> None:
        """Create (and mount) filesystem ``name``; with ``parents`` also missing ancestors
        (which may already exist)."""
        ...

    async def clone(self, snapshot: str, name: str,
                    props: Mapping[str, str] | None = None) -> None:
        """Create (and mount) filesystem ``name`` as a clone of ``snapshot``."""
        ...

    async def snapshot(self, name: str, props: Mapping[str, str] | None = None) -> None: ...

    async def rollback(self, snapshot: str, *, destroy_newer: bool = False) -> None:
        """Roll the dataset back to ``snapshot``; ``destroy_newer`` destroys later snapshots
        (zfs rollback -r), without which rolling back past them is a FailedPrecondition."""
        ...

    async def destroy(self, name: str, *, snapshots: bool = False) -> None:
        """Unmount and destroy dataset or snapshot ``name``; ``snapshots`` also destroys the
        dataset's snapshots (never clones made from them: those are FailedPrecondition)."""
        ...

    async def rename(self, name: str, new_name: str) -> None: ...

    async def set(self, name: str, props: Mapping[str, str]) -> None: ...

    async def mount(self, name: str) -> None:
        """Mount ``name`` if it is not mounted."""
        ...

    async def unmount(self, name: str) -> None:
        """Unmount ``name`` if it is mounted."""
        ...

    async def get(self, names: Sequence[str], props: Sequence[str], *,
                  recursive: bool = False) -> dict[str, dict[str, str]]:
        """Raw ``-p`` values: ``{name: {prop: value}}`` (``-`` where not applicable)."""
        ...

    async def info(self, names: Sequence[str], *, recursive: bool = False,
                   user_props: Sequence[str] = ()) -> list[DatasetInfo]: ...
