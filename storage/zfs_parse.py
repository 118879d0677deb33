"""Parsing the ``zfs``/``zpool`` tools' machine-readable output, and classifying their errors.

Pure: no I/O. Table-tested from output captured on zfs-fuse 0.7 and OpenZFS 2.1
(tests/unit/storage/captured/).

Only forms both implementations accept are parsed (environment.md section 3): zfs-fuse has no
``zfs list -p`` and no ``zfs get -t``, so exact numbers come from
``zfs get -H -p -o name,property,value PROPS NAME...`` (tab-separated, one property per line,
``-`` for "not applicable"), and pool state from
``zpool list -H -o name,health,size,allocated,free``
(zfs-fuse's ``zpool get`` has no ``-H``; its ``zpool list`` sizes are human-readable, so they are
parsed with :func:`parse_size`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runtime.errdefs import (
    AlreadyExists,
    ErrdefsError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)

#: ``zfs get -p`` prints ``-`` for a property that does not apply (e.g. ``quota`` of a snapshot).
NONE = "-"

_UNITS = {"": 0, "B": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"100M"`` → 104857600 (binary units, like zfs(8): K = 1024). Raises ValueError."""
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"not a size: {text!r}")
    number, unit = m.group(1), m.group(2).upper()
    value = float(number) * (1 << _UNITS[unit])
    if value != int(value) and not unit:
        raise ValueError(f"not a whole number of bytes: {text!r}")
    return int(value)


def format_size(n: int) -> str:
    """Bytes as zfs(8) prints them: ``1.5M``, ``512K``, ``0``."""
    for unit in ("E", "P", "T", "G", "M", "K"):
        shift = _UNITS[unit]
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(n)


def parse_get(output: str) -> dict[str, dict[str, str]]:
    """``zfs get -H -p -o name,property,value`` output → ``{name: {property: value}}``, in
    the order the tool printed the names."""
    out: dict[str, dict[str, str]] = {}
    for line in output.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"unexpected `zfs get` line: {line!r}")
        name, prop, value = parts
        out.setdefault(name, {})[prop] = value
    return out


def parse_names(output: str) -> list[str]:
    """``zfs list -H -o name`` output → names."""
    return [line.strip() for line in output.splitlines() if line.strip()]


def int_or_none(value: str | None) -> int | None:
    """A ``-p`` numeric value: ``-`` (not applicable) and ``none`` → None; ``0`` stays 0."""
    if value is None or value in (NONE, "none", ""):
        return None
    return int(value)


@dataclass(frozen=True)
class PoolStatus:
    name: str
    health: str
    size: int
    allocated: int
    free: int


def parse_zpool_list(output: str) -> list[PoolStatus]:
    """``zpool list -H -o name,health,size,allocated,free`` output (sizes may be exact, with
    OpenZFS's ``-p``, or human-readable as zfs-fuse prints them)."""
    pools = []
    for line in output.splitlines():
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 5:
            raise ValueError(f"unexpected `zpool list` line: {line!r}")
        name, health, size, alloc, free = parts
        pools.append(PoolStatus(name, health, parse_size(size), parse_size(alloc),
                                parse_size(free)))
    return pools


# -- errors -----------------------------------------------------------------------------------

#: stderr patterns → error class, most specific first. Wording is libzfs's in both zfs-fuse 0.7
#: and OpenZFS 2.1, with small differences; both are captured in tests/unit/storage/captured/.
_ERRORS: tuple[tuple[re.Pattern[str], type[ErrdefsError]], ...] = tuple(
    (re.compile(p, re.IGNORECASE), cls) for p, cls in (
        # No daemon (zfs-fuse: its socket is missing) or no kernel module (OpenZFS).
        (r"zfs-fuse daemon is running|zfs_socket|/dev/zfs|modules are not loaded", Unavailable),
        (r"dataset does not exist|no such pool|could not find any snapshots", NotFound),
        (r"no such file or directory", NotFound),
        (r"dataset already exists|already exists", AlreadyExists),
        (r"dataset is busy|pool or dataset is busy|device busy|resource busy", Unavailable),
        (r"out of space|disk quota exceeded|quota exceeded", FailedPrecondition),
        # OpenZFS 2.x: "more recent snapshots or bookmarks exist"; zfs-fuse: "… snapshots exist".
        (r"has children|dependent clones|more recent snapshots", FailedPrecondition),
        (r"filesystem already mounted|not currently mounted", FailedPrecondition),
        (r"bad numeric value|invalid character|invalid property|bad property|"
         r"invalid option|delimiter|name is too long|missing|invalid dataset name|"
         r"must be|exceeds|less than|greater than|permission denied", InvalidArgument),
    )
)


def classify(stderr: str) -> type[ErrdefsError]:
    """The errdefs class for a failed ``zfs``/``zpool`` command's stderr (Internal if unknown)."""
    for pattern, cls in _ERRORS:
        if pattern.search(stderr):
            return cls
    return Internal


def is_busy(stderr: str) -> bool:
    """The transient "busy" failure: zfs-fuse answers it to a ``destroy`` of a dataset mounted
    moments ago (it unmounts as a side effect, so a retry succeeds; environment.md section 3),
    and OpenZFS to an unmount racing a process leaving the mount."""
    return bool(re.search(r"\bbusy\b", stderr, re.IGNORECASE))


def first_line(stderr: str) -> str:
    """The tool's message without the usage text that follows some errors."""
    for line in stderr.splitlines():
        if line.strip():
            return line.strip()
    return ""
