"""Named network namespaces without forking. Standard library (ctypes) only.

Why not ``pyroute2.netns`` or ``AsyncIPRoute(netns=...)``: both fork a helper process
(pyroute2 ``process.ChildProcess``), and the shim daemon is a subreaper whose single
``waitpid(-1)`` loop (``runtime.reaper``) would steal the helper's exit status. A network
namespace is a per-*thread* attribute (setns(2), unshare(2) with CLONE_NEWNET), so the work is
done in a fresh thread that enters the namespace; the thread is never reused, so a failed switch
back cannot leak a namespace into other work.

A namespace is named as ``ip netns add`` does it (iproute2 ``ip/ipnetns.c``): an empty file
under ``/run/netns`` with ``/proc/thread-self/ns/net`` bind-mounted on it, in a directory made a
shared mount so that removing the bind mount propagates to mount namespaces that copied it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000  # linux/sched.h
MS_BIND = 0x1000  # linux/mount.h
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2
NETLINK_ROUTE = 0

_libc = ctypes.CDLL(None, use_errno=True)
_shared_dirs: set[str] = set()
_shared_lock = threading.Lock()


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns(CLONE_NEWNET)")


def run_in(path: str | Path | None, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread inside the network namespace at ``path`` (None or "" = this
    process's) and return its result or raise its exception. Blocks the caller briefly."""
    if not path:
        return fn()
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            error.append(exc)
            return
        try:
            _setns(target)
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)
        finally:
            os.close(target)
        # No switch back: this thread ends here and is never reused.

    t = threading.Thread(target=body, name="netns")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def route_socket(path: str | Path | None) -> socket.socket:
    """A NETLINK_ROUTE socket bound to the namespace at ``path`` (a socket keeps the namespace
    it was created in for its whole life, whatever thread uses it)."""
    return run_in(path, lambda: socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE))


def _make_shared(directory: Path) -> None:
    # iproute2 netns_add(): make the directory a shared mount, bind-mounting it onto itself
    # first when it is not a mount point yet (mount(2) fails with EINVAL then).
    key = str(directory)
    with _shared_lock:
        if key in _shared_dirs:
            return
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        target = key.encode()
        if _libc.mount(b"none", target, None, MS_SHARED | MS_REC, None) != 0:
            _check(_libc.mount(target, target, b"none", MS_BIND | MS_REC, None),
                   f"bind-mount {directory} onto itself")
            _check(_libc.mount(b"none", target, None, MS_SHARED | MS_REC, None),
                   f"make {directory} a shared mount")
        _shared_dirs.add(key)


def create(path: Path) -> None:
    """Create a network namespace and bind it at ``path``. AlreadyExists-like: raises
    FileExistsError when ``path`` exists. On failure nothing is left at ``path``."""
    _make_shared(path.parent)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    error: list[BaseException] = []

    def body() -> None:
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            _check(_libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), b"none",
                               MS_BIND, None), f"bind-mount the namespace on {path}")
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=body, name="netns-create")
    t.start()
    t.join()
    if error:
        with contextlib.suppress(OSError):
            path.unlink()
        raise error[0]


def remove(path: Path) -> bool:
    """Unbind and delete the namespace file (idempotent). The kernel destroys the namespace,
    and with it the veth ends inside, once no process and no other mount holds it. True if a
    namespace was bound there."""
    bound: bool = _libc.umount2(str(path).encode(), MNT_DETACH) == 0
    if not bound and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        err = ctypes.get_errno()
        raise OSError(err, f"umount {path}: {os.strerror(err)}")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return bound


def is_bound(path: Path) -> bool:
    """True when ``path`` is a network namespace (an nsfs bind mount), not a plain file."""
    try:
        st = os.stat(path)
        parent = os.stat(path.parent)
    except OSError:
        return False
    # A bind-mounted nsfs inode lives on another device than the directory holding it.
    return st.st_dev != parent.st_dev
