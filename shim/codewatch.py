"""Whether the code a zygote imported has changed since, without looking on every request.

The zygote is keyed by its code (shim.zygote_client.code_key: the newest mtime of the
project's ``.py`` files). Computing that key takes 0.7 ms in a warm process and 1.5 ms in a
fresh fork (measured, 2026-12-06), too much for every action run for the compiled launcher.
Instead the zygote watches the same directories with inotify(7) and treats any event on a
``.py`` file, any directory appearing, going or moving, and a lost event (queue overflow) as a
change. The window this leaves is the zygote's wake-up after the change (well under a
millisecond), not the request's.

inotify is reached through ctypes (the standard library has no binding); without it (no
watches left, say: ``fs.inotify.max_user_watches``) :func:`open_watch` returns None and the
zygote checks the key per request, as before.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct

from shim.zygote_client import package_dirs

log = logging.getLogger("shim.zygote")

# <sys/inotify.h> (Linux UAPI, include/uapi/linux/inotify.h).
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
         | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
_SELF = IN_DELETE_SELF | IN_MOVE_SELF | IN_Q_OVERFLOW | IN_IGNORED
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


class CodeWatch:
    """An inotify instance on the project's source directories (``__pycache__`` excluded)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def changed(self) -> bool:
        """Read the pending events; True if one of them concerns the code."""
        found = False
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return found
            found = found or any(_matters(mask, name) for mask, name in _events(data))

    def close(self) -> None:
        os.close(self.fd)


def _events(data: bytes) -> list[tuple[int, bytes]]:
    out, offset = [], 0
    while offset + _EVENT.size <= len(data):
        _wd, mask, _cookie, size = _EVENT.unpack_from(data, offset)
        offset += _EVENT.size
        out.append((mask, data[offset:offset + size].rstrip(b"\0")))
        offset += size
    return out


def _matters(mask: int, name: bytes) -> bool:
    if mask & _SELF:
        return True
    if mask & IN_ISDIR:
        return name != b"__pycache__"
    return name.endswith(b".py")


def open_watch(base: str | None = None) -> CodeWatch | None:
    """A watch on every source directory, or None (logged) if inotify cannot provide one."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
    except (OSError, AttributeError) as exc:
        log.warning("cannot watch the code for changes (%s): checked per request", exc)
        return None
    try:
        for directory in package_dirs(base):
            if libc.inotify_add_watch(fd, os.fsencode(directory), _MASK) < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"inotify_add_watch {directory}: {os.strerror(err)}")
    except OSError as exc:
        os.close(fd)
        level = logging.WARNING if exc.errno in (errno.ENOSPC, errno.ENOMEM) else logging.ERROR
        log.log(level, "cannot watch the code for changes (%s): checked per request", exc)
        return None
    return CodeWatch(fd)
