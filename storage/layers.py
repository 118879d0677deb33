"""Image layers: a task's rootfs mounts → ``<pool>/images/<key>@base``, populated once.

containerd's overlayfs snapshotter hands the task one ``overlay`` mount whose ``lowerdir`` lists
the image's (read-only, committed) layers, top first, and whose ``upperdir`` is the container's
writable layer (shim-protocol.md 2.10). The merged lower layers are the image; they are copied
once into ``<pool>/images/<key>``, snapshotted as ``@base`` and every container of that image is
a clone of it. A ``bind`` mount (the native snapshotter) is copied as a whole.

The key is a digest of each lower layer's path *and identity* (device, inode, change time), so
a containerd root reused at the same path with other content never matches a stale image.

Populated once, even by concurrent creates in different shims: the first ``zfs create`` of
``<pool>/images/<key>`` wins (ZFS makes it atomic) and marks the dataset with its owner
(``<pid>:<start time>``); the others wait until ``@base`` exists. If the owner dies half-way,
a waiter finds it gone (start time changed), destroys the half-populated dataset and tries
again. No lock is held across a command.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.errdefs import (
    AlreadyExists,
    DeadlineExceeded,
    ErrdefsError,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from runtime.types import Mount
from storage import layout
from storage.datasets import ensure_filesystem
from storage.driver import ZfsDriver
from storage.runner import CommandRunner

log = logging.getLogger(__name__)

KEY_LENGTH = 24
POPULATE_TIMEOUT = 600.0
POLL = 0.05


@dataclass(frozen=True)
class ImageSource:
    """The read-only layers of a task's rootfs (top first) and its writable layer, if any."""

    lowers: tuple[str, ...]
    upper: str | None = None

    def key(self) -> str:
        ident = []
        for path in self.lowers:
            try:
                st = os.stat(path)
            except OSError as exc:
                raise NotFound(f"rootfs layer {path}: {exc.strerror}") from None
            ident.append([path, st.st_dev, st.st_ino, st.st_ctime_ns])
        return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:KEY_LENGTH]


def image_source(mounts: Sequence[Mount]) -> ImageSource:
    """The image of a task's rootfs mounts; InvalidArgument naming what is not understood."""
    if len(mounts) != 1:
        raise InvalidArgument(f"rootfs: ZFS storage takes exactly one rootfs mount (an overlay "
                              f"or a bind from the snapshotter), got {len(mounts)}")
    m = mounts[0]
    if m.type == "overlay":
        opts = dict(o.split("=", 1) for o in m.options if "=" in o)
        lower = opts.get("lowerdir", "")
        if not lower:
            raise InvalidArgument("rootfs[0]: overlay mount without lowerdir")
        # Escaped colons ("\:") are part of a path (overlayfs docs); containerd never makes them.
        if "\\:" in lower:
            raise InvalidArgument("rootfs[0]: lowerdir paths with escaped ':' are not supported")
        return ImageSource(tuple(lower.split(":")), opts.get("upperdir") or None)
    if m.type == "bind" or "bind" in m.options or "rbind" in m.options:
        return ImageSource((m.source,))
    raise InvalidArgument(f"rootfs[0]: mount type {m.type!r} is not supported with ZFS storage "
                          "(overlay or bind)")


def _proc_start_time(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return raw[raw.rfind(")") + 2:].split()[19]


def _owner_token() -> str:
    pid = os.getpid()
    return f"{pid}:{_proc_start_time(pid)}"


def _owner_alive(token: str) -> bool:
    pid, _, started = token.partition(":")
    return pid.isdigit() and _proc_start_time(int(pid)) == started and started != ""


class LayerManager:
    def __init__(self, driver: ZfsDriver, runner: CommandRunner, pool: str) -> None:
        self.driver = driver
        self.runner = runner
        self.pool = layout.check_pool(pool)

    async def ensure(self, source: ImageSource, *, timeout: float = POPULATE_TIMEOUT) -> str:
        """The ``@base`` snapshot of ``source``'s image, populating it if no one has."""
        key = source.key()
        dataset = layout.image_dataset(self.pool, key)
        base = layout.base_snapshot(self.pool, key)
        deadline = time.monotonic() + timeout
        while True:
            if await self.driver.exists(base):
                return base
            if await self._claim(dataset, source):
                await self._populate(dataset, base, source)
                return base
            await self._wait(dataset, base, deadline)

    async def _claim(self, dataset: str, source: ImageSource) -> bool:
        await ensure_filesystem(self.driver, f"{self.pool}/{layout.IMAGES}")
        token = _owner_token()
        try:
            await self.driver.create(dataset, {
                layout.PROP_OWNER: token,
                layout.PROP_SOURCE: ":".join(source.lowers)[:1024],
            })
        except AlreadyExists:
            return False
        except ErrdefsError:
            # Created but not mounted (zfs-fuse, racing creators): ours if it bears our token.
            try:
                props = await self.driver.get([dataset], [layout.PROP_OWNER])
            except NotFound:
                raise
            if props.get(dataset, {}).get(layout.PROP_OWNER) != token:
                return False
        return True

    async def _wait(self, dataset: str, base: str, deadline: float) -> None:
        """Until ``base`` exists, ``dataset`` disappears (its populator failed and cleaned
        up) or its owner is dead (then the half-populated dataset is destroyed here)."""
        while time.monotonic() < deadline:
            if await self.driver.exists(base):
                return
            try:
                props = await self.driver.get([dataset], [layout.PROP_OWNER])
            except NotFound:
                return
            owner = props.get(dataset, {}).get(layout.PROP_OWNER, "-")
            if owner != "-" and not _owner_alive(owner):
                log.warning("image %s: its populator %s is gone; starting over", dataset, owner)
                try:
                    await self.driver.destroy(dataset, snapshots=True)
                except NotFound:
                    pass
                return
            await asyncio.sleep(POLL)
        raise DeadlineExceeded(f"image {dataset}: still being populated by another shim after "
                               f"{POPULATE_TIMEOUT:.0f} s")

    async def _populate(self, dataset: str, base: str, source: ImageSource) -> None:
        started = time.monotonic()
        try:
            info = (await self.driver.info([dataset]))[0]
            if not info.mounted:
                await self.driver.mount(dataset)
                info = (await self.driver.info([dataset]))[0]
            if info.mountpoint is None:
                raise Unavailable(f"image {dataset}: no mountpoint to populate it through")
            await self._copy_merged(source.lowers, info.mountpoint)
            await self.driver.snapshot(base)
            # The image never changes again; clones are writable (they do not inherit it).
            await self.driver.set(dataset, {"readonly": "on"})
        except BaseException:
            try:
                await self.driver.destroy(dataset, snapshots=True)
            except Exception:
                log.exception("image %s: cannot remove it after a failed populate", dataset)
            raise
        log.info("image %s populated from %d layer(s) in %.2f s", dataset, len(source.lowers),
                 time.monotonic() - started)

    async def _copy_merged(self, lowers: Sequence[str], dest: str) -> None:
        if len(lowers) == 1:
            await self._cp(lowers[0], dest)
            return
        # overlayfs merges read-only when it has only lower layers (two or more).
        view = tempfile.mkdtemp(prefix="lxcri-layers-")
        try:
            await self._cmd(["mount", "-t", "overlay", "overlay", "-o",
                             "ro,lowerdir=" + ":".join(lowers), view], "mount the image layers")
            try:
                await self._cp(view, dest)
            finally:
                await self._cmd(["umount", view], "unmount the image layers")
        finally:
            os.rmdir(view)

    async def _cp(self, src: str, dest: str) -> None:
        # -a keeps owners, modes, times, links and special files (a rootfs has /dev nodes).
        await self._cmd(["cp", "-a", src.rstrip("/") + "/.", dest.rstrip("/") + "/"],
                        f"copy the image from {src}")

    async def _cmd(self, argv: list[str], what: str) -> None:
        r = await self.runner.run(argv, timeout=POPULATE_TIMEOUT)
        if r.returncode != 0:
            err = r.stderr.decode("utf-8", "replace").strip().splitlines()
            raise Internal(f"cannot {what}: {err[0] if err else f'exit {r.returncode}'}")


def apply_upper(upper: str, dest: str) -> int:
    """Copy an overlay upper layer onto ``dest`` (a clone of the image), honouring overlayfs
    whiteouts (a 0/0 character device deletes the path) and opaque directories (the
    ``trusted.overlay.opaque`` xattr hides what is below). Returns the entries copied.

    Used when a task is created again on a container whose writable layer already has files
    (its earlier task wrote them); a fresh container's upper layer is empty. Blocking: call
    it through ``asyncio.to_thread``.
    """
    copied = 0
    for root, dirs, files in os.walk(upper):
        rel = os.path.relpath(root, upper)
        target_dir = os.path.normpath(os.path.join(dest, rel))
        if rel != "." and _is_opaque(root) and os.path.isdir(target_dir):
            for entry in os.listdir(target_dir):
                _remove(os.path.join(target_dir, entry))
        for name in dirs + files:
            src = os.path.join(root, name)
            dst = os.path.join(target_dir, name)
            st = os.lstat(src)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # a whiteout
                _remove(dst)
                continue
            if stat.S_ISDIR(st.st_mode):
                if not os.path.isdir(dst) or os.path.islink(dst):
                    _remove(dst)
                    os.mkdir(dst)
                shutil.copystat(src, dst, follow_symlinks=False)
                os.lchown(dst, st.st_uid, st.st_gid)
            else:
                _remove(dst)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(src), dst)
                elif stat.S_ISREG(st.st_mode):
                    shutil.copy2(src, dst, follow_symlinks=False)
                else:
                    os.mknod(dst, st.st_mode, st.st_rdev)
                os.lchown(dst, st.st_uid, st.st_gid)
            copied += 1
    return copied


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def has_entries(path: str | None) -> bool:
    if not path:
        return False
    try:
        with os.scandir(path) as it:
            return any(True for _ in it)
    except OSError:
        return False

