"""mount(2) and umount2(2) through ctypes, for the snapshotter's rootfs mounts.

Standard library only: the short-lived ``delete`` action imports it (through ``cleanup``).
containerd hands the shim a list of mounts (shim-protocol.md section 2.10), typically one
``overlay`` or one ``bind`` with ``rbind`` + ``ro``/``rw``; they are applied in order onto
``<bundle>/rootfs`` and undone in reverse.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.errdefs import InvalidArgument, Unavailable
from runtime.lxc import rootpath
from runtime.types import Mount

# linux/mount.h
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

#: option → (flags to set, flags to clear); anything else is filesystem data (mount(8)).
FLAGS: dict[str, tuple[int, int]] = {
    "ro": (MS_RDONLY, 0),
    "rw": (0, MS_RDONLY),
    "nosuid": (MS_NOSUID, 0),
    "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0),
    "dev": (0, MS_NODEV),
    "noexec": (MS_NOEXEC, 0),
    "exec": (0, MS_NOEXEC),
    "sync": (MS_SYNCHRONOUS, 0),
    "async": (0, MS_SYNCHRONOUS),
    "dirsync": (MS_DIRSYNC, 0),
    "mand": (MS_MANDLOCK, 0),
    "nomand": (0, MS_MANDLOCK),
    "noatime": (MS_NOATIME, 0),
    "atime": (0, MS_NOATIME),
    "nodiratime": (MS_NODIRATIME, 0),
    "diratime": (0, MS_NODIRATIME),
    "relatime": (MS_RELATIME, 0),
    "norelatime": (0, MS_RELATIME),
    "strictatime": (MS_STRICTATIME, 0),
    "bind": (MS_BIND, 0),
    "rbind": (MS_BIND | MS_REC, 0),
    "remount": (MS_REMOUNT, 0),
    "defaults": (0, 0),
}
PROPAGATION = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


@dataclass(frozen=True)
class ParsedOptions:
    flags: int
    data: str
    propagation: int


def parse_options(options: Sequence[str]) -> ParsedOptions:
    """Split mount(8)-style options into mount(2) flags, the data string and a propagation."""
    flags, propagation, data = 0, 0, []
    for opt in options:
        if opt in FLAGS:
            set_, clear = FLAGS[opt]
            flags = (flags | set_) & ~clear
        elif opt in PROPAGATION:
            propagation = PROPAGATION[opt]
        else:
            data.append(opt)
    return ParsedOptions(flags, ",".join(data), propagation)


def sys_mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    """mount(2); raises OSError."""
    rc = _lib().mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                      ctypes.c_ulong(flags), data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target} ({fstype}): {os.strerror(err)}")


def sys_umount(target: str, flags: int = 0) -> None:
    """umount2(2); raises OSError."""
    if _lib().umount2(target.encode(), ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


def _target(rootfs: Path, target: str) -> Path:
    """Where a mount with ``target`` goes: below ``rootfs``, resolved inside it
    (:mod:`runtime.lxc.rootpath`): an earlier mount of the list is the image, whose symlinks
    must not lead mount(2) onto the host (containerd's ``mount.All`` resolves targets with
    ``fs.RootPath`` likewise). It must exist."""
    if ".." in Path(target).parts:
        raise InvalidArgument(f"rootfs mount target {target!r}: must stay inside the rootfs")
    try:
        resolved = Path(rootpath.host_path(str(rootfs), target))
    except OSError as e:
        raise InvalidArgument(f"rootfs mount target {target!r}: {e.strerror or e}") from None
    if resolved == rootfs:
        raise InvalidArgument(f"rootfs mount target {target!r}: resolves to the rootfs itself")
    return resolved


def mount_one(m: Mount, rootfs: Path) -> str:
    """Apply one containerd mount below ``rootfs``; returns the mounted path."""
    target = _target(rootfs, m.target) if m.target.strip("/") else rootfs
    opts = parse_options(m.options)
    fstype = "" if m.type == "bind" else m.type
    flags = opts.flags | (MS_BIND if m.type == "bind" else 0)
    sys_mount(m.source, str(target), fstype, flags, opts.data)
    if flags & MS_BIND and flags & ~(MS_BIND | MS_REC):
        # A bind mount ignores every flag but MS_REC on creation; ro, nosuid … need a remount
        # of the new bind (mount(2), "Creating a bind mount").
        try:
            sys_mount("", str(target), "", flags | MS_REMOUNT, "")
        except OSError:
            unmount(str(target))
            raise
    if opts.propagation:
        sys_mount("", str(target), "", opts.propagation, "")
    return str(target)


def mount_all(mounts: Sequence[Mount], rootfs: Path) -> list[str]:
    """Apply ``mounts`` in order; on failure undo what was done and raise Unavailable or
    InvalidArgument naming the mount. Returns the mounted paths, in mount order."""
    done: list[str] = []
    for i, m in enumerate(mounts):
        try:
            done.append(mount_one(m, rootfs))
        except InvalidArgument:  # a target that leaves the rootfs: nothing half-mounted
            unmount_all(done)
            raise
        except OSError as e:
            unmount_all(done)
            kind = InvalidArgument if e.errno in (errno.EINVAL, errno.ENOENT) else Unavailable
            raise kind(f"rootfs[{i}] ({m.type} {m.source}): {e.strerror or e}") from e
    return done


def unmount(target: str) -> None:
    """Unmount ``target`` if mounted; a busy mount is detached lazily (MNT_DETACH)."""
    try:
        sys_umount(target, UMOUNT_NOFOLLOW)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
            return
        if e.errno != errno.EBUSY:
            raise
        sys_umount(target, MNT_DETACH | UMOUNT_NOFOLLOW)


def unmount_all(targets: Sequence[str]) -> None:
    """Undo ``mount_all`` (reverse order). Stacked mounts on one path are unmounted as often as
    they were mounted."""
    for target in reversed(targets):
        unmount(target)


def mounted_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (from /proc/self/mountinfo), for checks and tests."""
    base = str(path).rstrip("/")
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == base or point.startswith(base + "/"):
                found.append(point)
    return found
