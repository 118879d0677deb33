"""Choosing the ZFS driver: libzfs_core where /dev/zfs exists (OpenZFS, Proxmox nodes), the
command line otherwise (zfs-fuse here) and as the fallback (DESIGN.md section 6)."""

from __future__ import annotations

import logging
from pathlib import Path

from runtime.errdefs import InvalidArgument, Unavailable
from storage.driver import ZfsDriver
from storage.runner import CommandRunner
from storage.zfs_cli import ZfsCli
from storage.zfs_lzc import ZfsLzc, open_lzc

log = logging.getLogger(__name__)

DEV_ZFS = Path("/dev/zfs")


def open_driver(runner: CommandRunner, kind: str = "auto", *,
                dev_zfs: Path = DEV_ZFS) -> ZfsDriver:
    """``kind``: "auto" (lzc if /dev/zfs exists and libzfs_core loads, else cli), "cli", or
    "lzc" (Unavailable naming the reason where it cannot work)."""
    if kind == "cli":
        return ZfsCli(runner)
    if kind == "lzc":
        return ZfsLzc(runner, open_lzc())
    if kind != "auto":
        raise InvalidArgument(f"[storage] driver: {kind!r} is not one of auto, cli, lzc")
    if dev_zfs.exists():
        try:
            return ZfsLzc(runner, open_lzc())
        except Unavailable as exc:
            log.warning("%s; using the zfs command line", exc)
    return ZfsCli(runner)
