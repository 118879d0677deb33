"""Paths inside a container's root filesystem, resolved from the host without escaping it.

A rootfs's absolute symlinks (busybox's ``/bin/sh -> /bin/busybox``) point into the *container*,
so every link is resolved relative to the rootfs, and ``..`` stops at its root (the same rule as
Go's securejoin, used by runc). Only the standard library; no LXC knowledge.
"""

from __future__ import annotations

import posixpath
import stat
from pathlib import Path

from runtime.errdefs import NotFound
from runtime.lxc import rootpath

#: Used when the spec's env has no PATH (the value runc and Docker default to).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def resolve_in_rootfs(rootfs: Path, path: str) -> Path:
    """The host path of container path ``path``, every symlink followed inside ``rootfs``
    (:mod:`runtime.lxc.rootpath`'s rule, the one every path of the runtime follows).

    Missing components are kept as they are (the result may not exist). Raises ``OSError``
    (ELOOP) for a symlink loop.
    """
    try:
        return Path(rootpath.host_path(str(rootfs), path))
    except NotADirectoryError:  # a file used as a directory: a path that does not exist
        return rootfs.joinpath(*[p for p in path.split("/") if p not in ("", ".", "..")])


def _is_executable(host_path: Path) -> bool:
    try:
        st = host_path.stat()  # the last component is already resolved: no host-side link
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


def env_path(env: list[str]) -> str:
    """The PATH value of an OCI ``process.env`` list (the last one wins, like execve's env)."""
    value = None
    for item in env:
        if item.startswith("PATH="):
            value = item[5:]
    return DEFAULT_PATH if value is None else value


def look_path(rootfs: Path, name: str, env: list[str], cwd: str = "/") -> str:
    """The container path that running ``name`` would execute, like Go's ``exec.LookPath``
    evaluated inside ``rootfs``.

    Raises NotFound with runc's wording: ``exec: "x": executable file not found in $PATH``.
    """
    if "/" in name:
        path = posixpath.normpath(posixpath.join(cwd, name))
        try:
            host = resolve_in_rootfs(rootfs, path)
        except OSError as e:
            raise NotFound(f'exec: "{name}": {e.strerror}') from None
        if not host.exists():
            raise NotFound(f'exec: "{name}": stat {path}: no such file or directory')
        if not _is_executable(host):
            raise NotFound(f'exec: "{name}": permission denied (not an executable file)')
        return path
    for directory in env_path(env).split(":"):
        directory = directory or "."  # an empty PATH entry means the current directory
        path = posixpath.normpath(posixpath.join(cwd, directory, name))
        try:
            if _is_executable(resolve_in_rootfs(rootfs, path)):
                return path
        except OSError:  # a symlink loop: not this one, like execvp's ELOOP
            continue
    raise NotFound(f'exec: "{name}": executable file not found in $PATH')
