"""A checkpointed container's stdio across CRIU: which descriptors lead outside it, and how
the restored processes get the new task's streams instead.

containerd's FIFOs (and ``file://`` logs) are files outside the container's mount namespace:
CRIU can dump them only when told they are external (``--external file[<mnt_id>:<inode>]``,
both hexadecimal, the key CRIU itself builds in criu/files-reg.c), and a restore then needs a
descriptor for each such key (``--inherit-fd fd[<n>]:<key>``). A pipe (the stdin the shim
feeds, a ``binary://`` logger) is dumped by CRIU as a pipe, and restored onto the descriptor
given for ``pipe:[<inode>]``. The keys of a dump are kept next to its images, so that the
restore knows which of the new task's streams stands for which.

Options reach the CRIU that LXC runs through the file ``CRIU_CONFIG_FILE`` names (criu(8),
"Configuration files"): LXC has no way to pass them.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

#: Next to the CRIU images: {"0": key, "1": key, "2": key} for the streams that had a path.
KEYS_FILE = "lxcri-stdio.json"
#: The permission bits of those streams' files at the dump: {"1": 448, …}.
MODES_FILE = "lxcri-stdio-modes.json"
#: CRIU's extra options for the dump, also next to the images.
DUMP_CONF = "lxcri-dump.conf"


def fd_key(fd: int) -> str:
    """CRIU's name for what ``fd`` refers to."""
    link = os.readlink(f"/proc/self/fd/{fd}")
    if link.startswith("pipe:"):
        return link  # "pipe:[<inode>]", as CRIU names pipes for --inherit-fd
    mnt_id = -1
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("mnt_id:"):
            mnt_id = int(line.split()[1])
    return f"file[{mnt_id:x}:{os.fstat(fd).st_ino:x}]"


def keys_of(fds: tuple[int | None, int | None, int | None],
            paths: tuple[str, str, str]) -> dict[int, str]:
    """The keys of the streams that lead somewhere (a path was given for them)."""
    return {n: fd_key(fd) for n, (fd, path) in enumerate(zip(fds, paths, strict=True))
            if fd is not None and path}


def modes_of(pid: int, keys: dict[int, str]) -> dict[int, int]:
    """The permission bits of the files behind process ``pid``'s streams: CRIU refuses to
    restore onto a file whose mode differs from the dumped one (criu/files-reg.c, "has bad
    mode"), and LXC changes the mode of the container's stdio when it starts it
    (fix_stdio_permissions in src/lxc/utils.c: 0700 measured on a FIFO)."""
    modes = {}
    for n, key in keys.items():
        if key.startswith("file["):
            with contextlib.suppress(OSError):
                modes[n] = stat.S_IMODE(os.stat(f"/proc/{pid}/fd/{n}").st_mode)
    return modes


def write_dump_files(images: Path, keys: dict[int, str],
                     modes: dict[int, int] | None = None) -> Path:
    """Record the keys (and the files' modes) and write CRIU's options for the dump; returns
    the options file."""
    images.mkdir(parents=True, exist_ok=True)
    (images / KEYS_FILE).write_text(json.dumps({str(n): k for n, k in keys.items()}))
    (images / MODES_FILE).write_text(json.dumps({str(n): m for n, m in (modes or {}).items()}))
    external = sorted({k for k in keys.values() if k.startswith("file[")})
    conf = images / DUMP_CONF
    conf.write_text("".join(f"external {k}\n" for k in external))
    return conf


def read_keys(images: Path) -> dict[int, str]:
    return {n: str(k) for n, k in _read(images / KEYS_FILE).items()}


def read_modes(images: Path) -> dict[int, int]:
    return {n: int(m) for n, m in _read(images / MODES_FILE).items()}


def _read(path: Path) -> dict[int, Any]:
    """A {"<stream number>": value} file; empty if the dump wrote none."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return {int(n): v for n, v in raw.items()}


def inherit_lines(keys: dict[int, str], fds: dict[int, int]) -> list[str]:
    """``inherit-fd`` options: the dumped stream ``n`` becomes descriptor ``fds[n]``. One
    descriptor per key (stdout and stderr may be the same FIFO)."""
    seen: dict[str, int] = {}
    for n, key in sorted(keys.items()):
        seen.setdefault(key, fds[n])
    return [f"inherit-fd fd[{fd}]:{key}" for key, fd in seen.items()]
