"""Storage metrics as events: one JSON line per operation in the state root's events log.

``<state root>/runtime/events.log`` (DESIGN.md section 9) gets, for each snapshot, restore,
checkpoint (success or failure), dataset creation and destruction, a line such as
``{"ts": 1764139200.1, "source": "storage", "event": "checkpoint", "ok": true,
"container": "c1", "snapshot": "…@checkpoint-1764139200", "seconds": 0.021}``.
The operator CLI (``proxmox-lxcri storage status``) summarises them with the pool's health and
each dataset's usage. Lines are written with one ``O_APPEND`` write each, so concurrent shims
never interleave them. Standard library only; never raises (metrics must not fail a task).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EventLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path

    def record(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        line = json.dumps({"ts": round(time.time(), 3), "source": "storage", "event": event,
                           **fields}, sort_keys=True, default=str) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("cannot write the events log %s: %s", self.path, exc)


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    try:
        f = open(path, encoding="utf-8")
    except OSError:
        return
    with f:
        for line in f:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict) and item.get("source") == "storage":
                yield item


@dataclass
class Summary:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # event -> ok/failed
    durations: dict[str, list[float]] = field(default_factory=dict)  # event -> seconds

    def add(self, item: dict[str, Any]) -> None:
        event = str(item.get("event"))
        c = self.counts.setdefault(event, {"ok": 0, "failed": 0})
        c["ok" if item.get("ok", True) else "failed"] += 1
        if isinstance(item.get("seconds"), int | float) and item.get("ok", True):
            self.durations.setdefault(event, []).append(float(item["seconds"]))

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for event in sorted(self.counts):
            d = self.durations.get(event, [])
            out.append({"event": event, **self.counts[event],
                        "median_s": round(statistics.median(d), 4) if d else None,
                        "last_s": round(d[-1], 4) if d else None})
        return out


def summarise(path: Path) -> Summary:
    s = Summary()
    for item in read_events(path):
        s.add(item)
    return s
