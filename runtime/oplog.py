"""The lifecycle event log: one JSON line per operation, bounded in size, under the state root.

``<state root>/runtime/events.log`` (DESIGN.md section 9) gets a line for every operation a
shim, the storage layer or a backend performs: create, start, kill, exec, delete, checkpoint,
restore, each backend API call, each ZFS step. For example::

    {"ts": 1764139200.123, "source": "task", "event": "create", "ok": true, "seconds": 0.412,
     "namespace": "k8s.io", "container_id": "c1"}

A failed operation has ``"ok": false`` and ``"error"``. Lines are written with one
``O_APPEND`` write each, so the shims of a node (one per pod) never interleave them. When the
file passes ``max_bytes`` it is renamed to ``events.log.1`` (the previous ``.1`` goes), so the
log never holds more than about twice that. ``proxmox-lxcri events [--follow]`` reads it and
``proxmox-lxcri metrics`` derives its figures from it. Standard library only; recording never
raises: an event log must not fail a task.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Rotation threshold: about 10,000 lines of ~200 bytes; two files at most.
MAX_BYTES = 2 << 20
FILE = "events.log"


def path_under(root: Path) -> Path:
    return root / "runtime" / FILE


class OpLog:
    """Appends event lines to ``path`` (None: records nothing)."""

    def __init__(self, path: Path | None, *, source: str, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.source = source
        self.max_bytes = max_bytes

    def record(self, event: str, *, ok: bool = True, seconds: float | None = None,
               **fields: Any) -> None:
        if self.path is None:
            return
        item: dict[str, Any] = {"ts": round(time.time(), 3), "source": self.source,
                                "event": event, "ok": ok}
        if seconds is not None:
            item["seconds"] = round(seconds, 6)
        item.update({k: v for k, v in fields.items() if v is not None})
        line = json.dumps(item, sort_keys=True, default=str) + "\n"
        try:
            self._append(line.encode("utf-8", "replace"))
        except OSError as exc:
            log.warning("cannot write the events log %s: %s", self.path, exc)

    def _append(self, data: bytes) -> None:
        assert self.path is not None
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size + len(data) > self.max_bytes:
                fd = self._rotate(fd)
            os.write(fd, data)
        finally:
            os.close(fd)

    def _rotate(self, fd: int) -> int:
        """Rename a full log to ``.1`` (one shim does it; the others reopen) and reopen."""
        assert self.path is not None
        lock = os.open(self.path.with_name(FILE + ".lock"),
                       os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                # Another shim may have rotated while this one waited: only a still-full file
                # that is still the one at the path goes.
                st = os.stat(self.path)
                if st.st_ino == os.fstat(fd).st_ino and st.st_size >= self.max_bytes // 2:
                    os.replace(self.path, self.path.with_name(FILE + ".1"))
            except FileNotFoundError:
                pass
            os.close(fd)
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           0o600)
        finally:
            os.close(lock)


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError:
        return
    with f:
        for line in f:
            try:
                item = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            if isinstance(item, dict):
                yield item


def read(path: Path, *, source: str | None = None) -> Iterator[dict[str, Any]]:
    """Every event, oldest first (the rotated file, then the current one)."""
    for p in (path.with_name(path.name + ".1"), path):
        for item in _lines(p):
            if source is None or item.get("source") == source:
                yield item


def follow(path: Path, *, poll_s: float = 0.2, from_end: bool = True,
           stop: float | None = None) -> Iterator[dict[str, Any]]:
    """New events as they are written (``tail -F``: survives rotation), until ``stop`` (a
    ``time.monotonic()`` deadline) or for ever. ``from_end``: skip what is there already."""
    f = None
    ino = None
    buf = b""
    first = True
    try:
        while stop is None or time.monotonic() < stop:
            if f is None:
                try:
                    f = open(path, "rb")
                except OSError:
                    first = False  # a log created later is read from its start
                    time.sleep(poll_s)
                    continue
                ino = os.fstat(f.fileno()).st_ino
                if first and from_end:
                    f.seek(0, os.SEEK_END)
                first, buf = False, b""
            chunk = f.read(65536)
            if chunk:
                buf += chunk
                *done, buf = buf.split(b"\n")
                for line in done:
                    try:
                        item = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(item, dict):
                        yield item
                continue
            try:
                rotated = os.stat(path).st_ino != ino
            except OSError:
                rotated = False
            if rotated:  # the old file was read to its end: go on with the new one
                f.close()
                f = None
                continue
            time.sleep(poll_s)
    finally:
        if f is not None:
            f.close()
