"""The network state directory: one lock, atomic JSON files. Standard library only.

Every shim daemon on the node and every ``delete`` action share ``<state_dir>`` (leases, network
records, bridge ownership). One ``flock(2)`` on ``<state_dir>/lock`` serialises their
read-modify-write cycles; it is held only for file I/O (microseconds), never across a netlink
call, and taken in a worker thread by the asyncio callers so the event loop never blocks on it.
Writes are temp file + fsync + rename, so a crash leaves the old or the new file, never half.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_NAME = "lock"


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Hold the state directory's exclusive lock (blocking; call from a thread)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last fd of the open file description drops the flock


def read_json(path: Path) -> Any | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:
        # A hand-edited or foreign file: refuse to guess (and never overwrite it silently).
        raise OSError(f"{path}: not valid JSON") from None


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # 0600: leases and records name containers and addresses (issue 12, docs/security.md).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        # json.dumps, not json.dump: only the one-shot encode without ``indent`` runs json's C
        # encoder (Lib/json/encoder.py, c_make_encoder); dump streams through the Python one,
        # which made a 1,000-lease pool file several times slower (bench/network_ipam.py).
        f.write(json.dumps(data, sort_keys=True, separators=(",", ":")))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
