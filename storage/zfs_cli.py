"""The ZFS driver over the ``zfs``/``zpool`` command line: zfs-fuse here, OpenZFS anywhere.

It builds argv lists (never a shell), runs them through the injected
:class:`~storage.runner.CommandRunner`, parses ``-H -p`` output (:mod:`storage.zfs_parse`) and
maps failures to errdefs. Only options both zfs-fuse 0.7 and OpenZFS accept are used
(environment.md section 3: no ``zfs list -p``, no ``zfs get -t``).

Transient failures are retried: zfs-fuse answers "dataset is busy" to a ``destroy`` of a dataset
mounted moments ago, and unmounts it as a side effect, so the retry succeeds (environment.md
section 3); OpenZFS answers the same to an unmount racing a process that is leaving the mount.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from runtime.errdefs import ErrdefsError, FailedPrecondition, NotFound, Unavailable
from storage.driver import INFO_PROPS, DatasetInfo
from storage.runner import CommandRunner
from storage.zfs_parse import (
    PoolStatus,
    classify,
    first_line,
    int_or_none,
    is_busy,
    parse_get,
    parse_zpool_list,
)

log = logging.getLogger(__name__)

#: Delays between attempts of a command that failed with "busy" (about 2 s in all).
BUSY_RETRIES = (0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)
TIMEOUT = 60.0


class ZfsCli:
    kind = "cli"

    def __init__(self, runner: CommandRunner, *, zfs: str = "zfs", zpool: str = "zpool") -> None:
        self._runner = runner
        self._zfs = zfs
        self._zpool = zpool

    # -- running ------------------------------------------------------------------------------

    async def _run(self, argv: list[str], *, retry_busy: bool = False) -> str:
        delays = iter(BUSY_RETRIES if retry_busy else ())
        while True:
            try:
                r = await self._runner.run(argv, timeout=TIMEOUT)
            except FileNotFoundError:
                raise Unavailable(f"{argv[0]}: not installed (ZFS userland missing)") from None
            except TimeoutError:
                raise Unavailable(f"{' '.join(argv[:3])}: no answer in {TIMEOUT:.0f} s") from None
            if r.returncode == 0:
                return r.stdout.decode("utf-8", "replace")
            stderr = r.stderr.decode("utf-8", "replace")
            if is_busy(stderr):
                delay = next(delays, None)
                if delay is not None:
                    log.debug("%s: busy, retrying in %.2f s", " ".join(argv), delay)
                    await asyncio.sleep(delay)
                    continue
            raise self._error(argv, stderr)

    @staticmethod
    def _error(argv: list[str], stderr: str) -> ErrdefsError:
        message = first_line(stderr) or "exited with an error and no message"
        cmd = " ".join(argv[:2])
        return classify(stderr)(f"{cmd}: {message}")

    async def _zfs_(self, *args: str, retry_busy: bool = False) -> str:
        return await self._run([self._zfs, *args], retry_busy=retry_busy)

    @staticmethod
    def _opts(props: Mapping[str, str] | None) -> list[str]:
        out: list[str] = []
        for key, value in (props or {}).items():
            out += ["-o", f"{key}={value}"]
        return out

    # -- pools --------------------------------------------------------------------------------

    async def pool_status(self, pool: str) -> PoolStatus:
        out = await self._run([self._zpool, "list", "-H", "-o",
                               "name,health,size,allocated,free", pool])
        pools = parse_zpool_list(out)
        if not pools:
            raise NotFound(f"zpool {pool}: no such pool")
        return pools[0]

    # -- datasets -----------------------------------------------------------------------------

    async def exists(self, name: str) -> bool:
        try:
            await self._zfs_("get", "-H", "-o", "name", "type", name)
        except NotFound:
            return False
        return True

    async def create(self, name: str, props: Mapping[str, str] | None = None, *,
                     parents: bool = False) -> None:
        await self._zfs_("create", *(["-p"] if parents else []), *self._opts(props), name)

    async def clone(self, snapshot: str, name: str,
                    props: Mapping[str, str] | None = None) -> None:
        await self._zfs_("clone", *self._opts(props), snapshot, name)

    async def snapshot(self, name: str, props: Mapping[str, str] | None = None) -> None:
        await self._zfs_("snapshot", *self._opts(props), name)

    async def rollback(self, snapshot: str, *, destroy_newer: bool = False) -> None:
        await self._zfs_("rollback", *(["-r"] if destroy_newer else []), snapshot,
                         retry_busy=True)

    async def destroy(self, name: str, *, snapshots: bool = False) -> None:
        if "@" not in name:
            # Unmount first: zfs-fuse refuses to destroy a mounted dataset ("busy", even with
            # -f), while `zfs umount && zfs destroy` works the first time (environment.md 3).
            try:
                await self.unmount(name)
            except Unavailable:
                # Still busy after the retries (a process left in it): force, as destroy would.
                await self._zfs_("umount", "-f", name)
        await self._zfs_("destroy", *(["-r"] if snapshots else []), name, retry_busy=True)

    async def rename(self, name: str, new_name: str) -> None:
        try:
            await self._zfs_("rename", name, new_name, retry_busy=True)
        except Unavailable:
            if "@" in name:
                raise
            # zfs-fuse remounts a renamed dataset and can stay "busy" for a while after it was
            # mounted; renaming it unmounted always works. Mounted again afterwards.
            await self._zfs_("umount", "-f", name)
            await self._zfs_("rename", name, new_name, retry_busy=True)
            await self.mount(new_name)

    async def set(self, name: str, props: Mapping[str, str]) -> None:
        # One property per call: zfs-fuse's `zfs set` takes a single property=value.
        for key, value in props.items():
            await self._zfs_("set", f"{key}={value}", name)

    async def mount(self, name: str) -> None:
        try:
            await self._zfs_("mount", name)
        except FailedPrecondition as exc:
            if "already mounted" not in str(exc):
                raise

    async def unmount(self, name: str) -> None:
        try:
            await self._zfs_("umount", name, retry_busy=True)
        except FailedPrecondition as exc:
            if "not currently mounted" not in str(exc):
                raise

    async def get(self, names: Sequence[str], props: Sequence[str], *,
                  recursive: bool = False) -> dict[str, dict[str, str]]:
        if not names:
            return {}
        out = await self._zfs_("get", "-H", "-p", *(["-r"] if recursive else []),
                               "-o", "name,property,value", ",".join(props), *names)
        return parse_get(out)

    async def info(self, names: Sequence[str], *, recursive: bool = False,
                   user_props: Sequence[str] = ()) -> list[DatasetInfo]:
        raw = await self.get(names, (*INFO_PROPS, *user_props), recursive=recursive)
        return [to_info(name, props, user_props) for name, props in raw.items()]


def to_info(name: str, props: Mapping[str, str], user_props: Sequence[str] = ()) -> DatasetInfo:
    """A :class:`DatasetInfo` from ``zfs get -p`` values (see :data:`INFO_PROPS`)."""
    def num(key: str) -> int | None:
        return int_or_none(props.get(key))

    origin = props.get("origin", "-")
    mountpoint = props.get("mountpoint", "-")
    quota, reservation = num("quota"), num("reservation")
    return DatasetInfo(
        name=name,
        type=props.get("type", "filesystem"),
        used=num("used") or 0,
        referenced=num("referenced") or 0,
        available=num("available"),
        # `-p` prints 0 for "none" (both implementations).
        quota=quota or None,
        reservation=reservation or None,
        origin=None if origin in ("-", "") else origin,
        creation=num("creation") or 0,
        mountpoint=None if mountpoint in ("-", "none", "legacy", "") else mountpoint,
        mounted=props.get("mounted") == "yes",
        user={k: props[k] for k in user_props if props.get(k, "-") != "-"},
    )
