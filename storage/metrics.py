"""Storage metrics as events: one JSON line per operation in the state root's events log.

``<state root>/runtime/events.log`` (DESIGN.md section 9) gets, for each snapshot, restore,
checkpoint (success or failure), dataset creation and destruction, a line such as
``{"ts": 1764139200.1, "source": "storage", "event": "checkpoint", "ok": true,
"container": "c1", "snapshot": "…@checkpoint-1764139200", "seconds": 0.021}``.
The operator CLI (``proxmox-lxcri storage status``) summarises them with the pool's health and
each dataset's usage. The log itself (one write per line, bounded size, rotation) is
runtime/oplog.py's. Standard library only; never raises (metrics must not fail a task).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import oplog
from runtime.oplog import OpLog


class EventLog(OpLog):
    """The storage layer's lines in the node's event log (runtime/oplog.py)."""

    def __init__(self, path: Path | None) -> None:
        super().__init__(path, source="storage")

    def record(self, event: str, *, ok: bool = True, seconds: float | None = None,
               **fields: Any) -> None:
        super().record(event, ok=ok, seconds=seconds, **fields)


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    return oplog.read(path, source="storage")


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
