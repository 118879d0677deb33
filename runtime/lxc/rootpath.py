"""The one rule for paths inside a container's root: resolved *inside* it, never escaping.

Every path the runtime creates, mounts onto or makes a device at is looked up here. A rootfs
comes from an image, and an image may hold ``evil -> /etc`` or ``evil -> ../../..``; the
runtime runs as root on the host (LXC's hooks and mount entries are applied before the root
switch), so following such a link the host's way writes to the host. runc's rule, which this
module follows, is to resolve every component as the container would see it: an absolute link
starts again at the container's root, ``..`` stops at it, a loop is ELOOP after 40 links
(Linux's MAXSYMLINKS); missing components are created inside the root only (runc
``libcontainer/utils.WithProcfd`` / ``securejoin``, and ``openat2(2)`` ``RESOLVE_IN_ROOT``).

Two engines, one answer:

- ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`` (Linux 5.6+, ``man 2 openat2``) when the
  whole path exists and the root is one filesystem tree: the kernel resolves it;
- otherwise a component-by-component walk with ``O_PATH | O_NOFOLLOW`` file descriptors, which
  reads each symlink and re-resolves its text itself. The walk also knows *layers*: filesystems
  that will be mounted at a container path before the path is used (LXC applies mount entries
  in order, so a mount point below an earlier mount lies in that mount's filesystem, not in the
  image). Unit tests check that both engines agree on generated trees.

Only the standard library, and no import from this project: the autodev hook runs this file as
a script (``python -I -S rootpath.py devices …``) inside the container's mount namespace.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

#: Linux's MAXSYMLINKS (fs/namei.c): more links than this in one lookup is ELOOP.
MAX_SYMLINKS = 40
#: ``__NR_openat2`` is 437 on every architecture (include/uapi/asm-generic/unistd.h).
_SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_IN_ROOT = 0x10
_DIR_FLAGS = os.O_PATH | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    """``struct open_how`` (include/uapi/linux/openat2.h)."""

    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc: ctypes.CDLL | None = None
_openat2_works: bool | None = None


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """openat2(2); raises OSError (ENOSYS before Linux 5.6, or where seccomp blocks it)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd),
                       ctypes.c_char_p(os.fsencode(path)), ctypes.byref(how),
                       ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def have_openat2() -> bool:
    """Whether this kernel (and seccomp policy) lets us use openat2, probed once."""
    global _openat2_works
    if _openat2_works is None:
        try:
            os.close(openat2(-100, "/", os.O_PATH, RESOLVE_IN_ROOT))  # AT_FDCWD
            _openat2_works = True
        except OSError:
            _openat2_works = False
    return _openat2_works


@dataclass(frozen=True)
class Layer:
    """A filesystem mounted at container path ``at`` before the looked-up path is used.

    ``source`` is the host directory a bind mount shows there (looked into like the rootfs);
    None for a filesystem that does not exist yet, whose content cannot be looked at:
    ``fresh`` (an empty tmpfs, proc, sysfs…: it holds no symlinks of the image's making, and
    whoever mounts it may create mount points in it) or not (``opaque``: a block device, an
    overlay…, where nothing may be created from outside)."""

    at: str
    source: str | None = None
    fresh: bool = True


@dataclass
class Resolved:
    """Where a container path leads. ``path`` is absolute, without symlinks, ``.`` or ``..``.

    ``fd`` (an ``O_PATH`` descriptor the caller must close, see :meth:`close`) is the deepest
    directory that could be looked at, at container path ``base``; ``rest`` are the components
    below it that do not exist yet. ``where`` says what the rest is in: ``"exists"`` (no rest),
    ``"missing"`` (creatable through ``fd``), ``"fresh"`` or ``"opaque"`` (a layer's filesystem
    that is not mounted yet, see :class:`Layer`)."""

    path: str
    fd: int
    base: str
    rest: list[str] = field(default_factory=list)
    where: str = "exists"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Resolved:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _resolve_openat2(root_fd: int, path: str) -> Resolved | None:
    """The kernel's answer for an existing path, or None to let the walk decide."""
    try:
        fd = openat2(root_fd, path, os.O_PATH, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    except OSError:  # missing, ELOOP, EAGAIN (a concurrent rename)…: the walk says which
        return None
    try:
        root, found = _fd_path(root_fd), _fd_path(fd)
    except OSError:
        os.close(fd)
        return None
    if root == "/":
        inner = found
    elif found == root or found.startswith(root + "/"):
        inner = found[len(root):] or "/"
    else:  # unreachable from our mount namespace (a detached mount): let the walk decide
        os.close(fd)
        return None
    return Resolved(path=inner, fd=fd, base=inner)


def resolve(root_fd: int, path: str, layers: Sequence[Layer] = (), *,
            use_openat2: bool = True) -> Resolved:
    """Resolve container path ``path`` below the directory ``root_fd``.

    Symlinks are followed inside the root (absolute ones restart at it), ``..`` never climbs
    above it. ``layers`` are filesystems mounted before the path is used (see :class:`Layer`);
    the last one at a path wins, as the last mount does. Raises OSError: ELOOP for a loop,
    ENOTDIR when a file is used as a directory."""
    if use_openat2 and not layers and have_openat2():
        found = _resolve_openat2(root_fd, path)
        if found is not None:
            return found
    at = {layer.at.rstrip("/") or "/": layer for layer in layers}
    # The walk's position: (name, O_PATH fd or -1, what the component is in).
    stack: list[tuple[str, int, str]] = [("", os.dup(root_fd), "exists")]
    todo = _parts(path)
    links = 0

    def here(extra: str = "") -> str:
        names = [n for n, _, _ in stack[1:]] + ([extra] if extra else [])
        return "/" + "/".join(names)

    try:
        while todo:
            part = todo.pop(0)
            if part == "..":
                if len(stack) > 1:
                    fd = stack.pop()[1]
                    if fd >= 0:
                        os.close(fd)
                continue
            layer = at.get(here(part))
            if layer is not None:
                if layer.source is not None:
                    # A bind source is a host path the spec names; LXC opens it the host's
                    # way too. What lies *below* it is resolved by the container's rules.
                    stack.append((part, os.open(layer.source, _DIR_FLAGS | os.O_DIRECTORY),
                                  "exists"))
                else:
                    stack.append((part, -1, "fresh" if layer.fresh else "opaque"))
                continue
            parent_fd, parent_where = stack[-1][1], stack[-1][2]
            if parent_fd < 0:  # nothing to look at: the rest is lexical
                stack.append((part, -1, parent_where))
                continue
            try:
                fd = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
            except FileNotFoundError:
                stack.append((part, -1, "missing"))
                continue
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                stack.append((part, fd, "exists"))
                continue
            try:
                target = os.readlink("", dir_fd=fd)  # the link we opened, not a successor
            finally:
                os.close(fd)
            links += 1
            if links > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
            if target.startswith("/"):
                while len(stack) > 1:
                    fd = stack.pop()[1]
                    if fd >= 0:
                        os.close(fd)
            todo[:0] = _parts(target)
        last = max(i for i, (_, fd, _) in enumerate(stack) if fd >= 0)
        base = "/" + "/".join(n for n, _, _ in stack[1:last + 1])
        rest = [n for n, _, _ in stack[last + 1:]]
        where = stack[last + 1][2] if rest else "exists"
        fd = os.dup(stack[last][1])
        return Resolved(path=here(), fd=fd, base=base, rest=rest, where=where)
    finally:
        for _, fd, _ in stack:
            if fd >= 0:
                os.close(fd)


def host_path(root: str, path: str) -> str:
    """The host path of container path ``path`` of the root directory ``root`` (for reading:
    the answer may change once the caller looks, so never create through it)."""
    root_fd = os.open(root, _DIR_FLAGS | os.O_DIRECTORY)
    try:
        with resolve(root_fd, path) as found:
            return root.rstrip("/") + found.path if found.path != "/" else root
    finally:
        os.close(root_fd)


def make_parents(found: Resolved, mode: int = 0o755) -> tuple[int, str]:
    """Create the missing directories above ``found``'s last component, inside the root.

    Returns (an ``O_PATH`` fd of the parent directory, the last component's name); the caller
    closes the fd. Each new directory is opened with ``O_NOFOLLOW | O_DIRECTORY`` right after
    ``mkdirat``: if something swapped in a symlink meanwhile, this fails instead of following.
    """
    if found.where != "missing" or not found.rest:
        raise OSError(errno.EEXIST if found.where == "exists" else errno.EXDEV,
                      f"{found.path}: nothing to create through this root", found.path)
    fd = os.dup(found.fd)
    try:
        for part in found.rest[:-1]:
            try:
                os.mkdir(part, mode, dir_fd=fd)
            except FileExistsError:
                pass
            new = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
    except BaseException:
        os.close(fd)
        raise
    return fd, found.rest[-1]


def make(found: Resolved, kind: str, mode: int = 0o755) -> None:
    """Create the missing ``found`` as a ``"dir"`` or an empty ``"file"``, inside the root;
    nothing if it exists."""
    if found.where == "exists":
        return
    fd, name = make_parents(found)
    try:
        if kind == "dir":
            try:
                os.mkdir(name, mode, dir_fd=fd)
            except FileExistsError:
                pass
        else:
            try:
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, mode & 0o666, dir_fd=fd))
            except FileExistsError:
                pass
    finally:
        os.close(fd)


_DEVICE_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def make_device(root_fd: int, device: dict[str, object]) -> None:
    """One OCI ``linux.devices`` entry (config-linux.md "Devices") below ``root_fd``.

    As runc's ``createDeviceNode``: the path is resolved inside the root (a symlink in the
    image leads to the in-root target), missing directories are created, and a node whose path
    already exists is left as it is."""
    path = str(device["path"])
    kind = _DEVICE_TYPES[str(device["type"])]
    major, minor = int(str(device.get("major", 0))), int(str(device.get("minor", 0)))
    with resolve(root_fd, path) as found:
        if found.path == "/":
            raise OSError(errno.EEXIST, "mknod over the container's root", path)
        if found.where == "exists":
            return
        fd, name = make_parents(found)
    try:
        mode = int(str(device.get("fileMode", 0o666))) & 0o7777
        os.mknod(name, kind | mode, os.makedev(major, minor) if kind != stat.S_IFIFO else 0,
                 dir_fd=fd)
        os.chown(name, int(str(device.get("uid", 0))), int(str(device.get("gid", 0))),
                 dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


def make_devices(root: str, devices: Sequence[dict[str, object]]) -> None:
    """Every device of ``devices`` below the directory ``root`` (opened once)."""
    root_fd = os.open(root, _DIR_FLAGS | os.O_DIRECTORY)
    old = os.umask(0)  # fileMode is exact, like runc (which clears the umask for mknod)
    try:
        for device in devices:
            try:
                make_device(root_fd, device)
            except OSError as e:
                raise OSError(e.errno, f"linux.devices: {device.get('path')}: "
                                       f"{e.strerror or e}") from None
    finally:
        os.umask(old)
        os.close(root_fd)


def main(argv: list[str] | None = None,
         stderr: Callable[[str], object] = sys.stderr.write) -> int:
    """``rootpath.py devices JSON [hook args…]``: the autodev hook. The root is LXC's
    ``$LXC_ROOTFS_MOUNT`` (man lxc.container.conf, CONTAINER HOOKS); LXC appends the
    container name, section and hook type, which are ignored."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "devices":
        stderr("usage: rootpath.py devices JSON\n")
        return 2
    root = os.environ.get("LXC_ROOTFS_MOUNT", "")
    if not root:
        stderr("rootpath.py: LXC_ROOTFS_MOUNT is not set\n")
        return 2
    try:
        make_devices(root, json.loads(args[1]))
    except (OSError, ValueError, KeyError) as e:
        stderr(f"rootpath.py: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
