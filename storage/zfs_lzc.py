"""The ZFS driver over libzfs_core (cffi, :mod:`storage.lzc`), for OpenZFS hosts with /dev/zfs.

libzfs_core is one ioctl per operation with errno results, so create, clone, snapshot, exists
and destroy cost no process start. What libzfs_core does not do stays with the command line
(:class:`~storage.zfs_cli.ZfsCli`, which this class extends): mounting (libzfs_core never
mounts; ``zfs mount`` does), rollback, rename, ``set`` of index properties and reading
properties. Behaviour is the same as the command-line driver's (the same driver tests run
against both in the kernel test host).

libzfs_core calls block, so they run in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from runtime.errdefs import (
    AlreadyExists,
    ErrdefsError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from storage.runner import CommandRunner
from storage.zfs_cli import BUSY_RETRIES, ZfsCli

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Properties libzfs_core takes as numbers (zfs(8) numeric properties). Index properties
#: (readonly, canmount, compression …) would need their enum values, so calls with them go
#: through the command line instead.
NUMERIC = frozenset({"quota", "reservation", "refquota", "refreservation", "recordsize"})

_ERRNO: dict[int, type[ErrdefsError]] = {
    errno.ENOENT: NotFound,
    errno.EEXIST: AlreadyExists,
    errno.EBUSY: Unavailable,
    errno.ENOSPC: FailedPrecondition,
    errno.EDQUOT: FailedPrecondition,
    errno.EINVAL: InvalidArgument,
    errno.ENAMETOOLONG: InvalidArgument,
    errno.EPERM: FailedPrecondition,
    errno.EACCES: FailedPrecondition,
    errno.EXDEV: InvalidArgument,
}


def to_errdefs(exc: OSError, what: str) -> ErrdefsError:
    code = exc.errno or 0
    cls = _ERRNO.get(code, Internal)
    return cls(f"{what}: {exc.strerror or exc}")


def lzc_props(props: Mapping[str, str] | None) -> dict[str, int | str] | None:
    """Properties as libzfs_core wants them, or None when one needs the command line."""
    out: dict[str, int | str] = {}
    for key, value in (props or {}).items():
        if ":" in key:  # user property: a string
            out[key] = value
        elif key in NUMERIC:
            out[key] = int(value)
        else:
            return None
    return out


class ZfsLzc(ZfsCli):
    kind = "lzc"

    def __init__(self, runner: CommandRunner, lib: Any, **kw: str) -> None:
        """``lib`` is an initialised :class:`storage.lzc.LibZfsCore`."""
        super().__init__(runner, **kw)
        self._lib = lib

    async def _call(self, fn: Callable[..., T], *args: Any, what: str,
                    retry_busy: bool = False) -> T:
        delays = iter(BUSY_RETRIES if retry_busy else ())
        while True:
            try:
                return await asyncio.to_thread(fn, *args)
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    delay = next(delays, None)
                    if delay is not None:
                        await asyncio.sleep(delay)
                        continue
                raise to_errdefs(exc, what) from None

    async def exists(self, name: str) -> bool:
        return bool(await self._call(self._lib.exists, name, what=f"exists {name}"))

    async def create(self, name: str, props: Mapping[str, str] | None = None, *,
                     parents: bool = False) -> None:
        converted = lzc_props(props)
        if parents or converted is None:
            await super().create(name, props, parents=parents)
            return
        await self._call(self._lib.create, name, converted, what=f"create {name}")
        await self.mount(name)

    async def clone(self, snapshot: str, name: str,
                    props: Mapping[str, str] | None = None) -> None:
        converted = lzc_props(props)
        if converted is None:
            await super().clone(snapshot, name, props)
            return
        await self._call(self._lib.clone, name, snapshot, converted, what=f"clone {snapshot}")
        await self.mount(name)

    async def snapshot(self, name: str, props: Mapping[str, str] | None = None) -> None:
        converted = lzc_props(props)
        if converted is None:
            await super().snapshot(name, props)
            return
        await self._call(self._lib.snapshot, [name], converted, what=f"snapshot {name}")

    async def destroy(self, name: str, *, snapshots: bool = False) -> None:
        if "@" in name:
            try:
                await self._call(self._lib.destroy_snapshots, [name], what=f"destroy {name}",
                                 retry_busy=True)
            except (Unavailable, AlreadyExists) as exc:  # EEXIST/EBUSY: it has clones
                raise FailedPrecondition(f"cannot destroy '{name}': snapshot has dependent "
                                         f"clones ({exc})") from None
            return
        if not await self.exists(name):
            raise NotFound(f"zfs destroy: cannot open '{name}': dataset does not exist")
        await self.unmount(name)
        if snapshots:
            snaps = [s for s in await self.get([name], ["type"], recursive=True) if "@" in s]
            if snaps:
                try:
                    await self._call(self._lib.destroy_snapshots, snaps,
                                     what=f"destroy snapshots of {name}", retry_busy=True)
                except (Unavailable, AlreadyExists) as exc:
                    # A snapshot with clones: the kernel answers EEXIST/EBUSY. Say it as the
                    # command line does.
                    raise FailedPrecondition(f"cannot destroy '{name}': filesystem has "
                                             f"dependent clones ({exc})") from None
        try:
            await self._call(self._lib.destroy, name, what=f"destroy {name}", retry_busy=True)
        except AlreadyExists as exc:  # EEXIST: it still has snapshots or children
            raise FailedPrecondition(f"cannot destroy '{name}': filesystem has children "
                                     f"({exc})") from None


def open_lzc() -> Any:
    """An initialised LibZfsCore, or Unavailable saying why (no module, no library)."""
    try:
        from storage.lzc import LibZfsCore
        lib = LibZfsCore()
        lib.init()
    except OSError as exc:
        raise Unavailable(f"libzfs_core: {exc.strerror or exc}") from None
    except ImportError as exc:
        raise Unavailable(f"libzfs_core: {exc}") from None
    return lib
