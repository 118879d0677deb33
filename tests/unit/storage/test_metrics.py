"""The events log lines storage writes, and the summary ``proxmox-lxcri storage`` prints."""

from __future__ import annotations

import json
from pathlib import Path

from storage.metrics import EventLog, summarise


def test_events_are_json_lines_and_summarised(tmp_path: Path) -> None:
    path = tmp_path / "runtime" / "events.log"
    log = EventLog(path)
    log.record("checkpoint", ok=True, container="c1", seconds=0.02)
    log.record("checkpoint", ok=True, container="c1", seconds=0.04)
    log.record("checkpoint", ok=False, container="c1", error="CRIU checkpoint not possible")
    log.record("restore", ok=True, container="c1", seconds=0.06)
    with open(path, "a") as f:  # other writers' lines and garbage are skipped
        f.write('{"source": "shim", "event": "task-exit"}\nnot json\n')
    lines = [json.loads(x) for x in path.read_text().splitlines()[:4]]
    assert all(x["source"] == "storage" and "ts" in x for x in lines)
    rows = {r["event"]: r for r in summarise(path).rows()}
    assert rows["checkpoint"] == {"event": "checkpoint", "ok": 2, "failed": 1,
                                  "median_s": 0.03, "last_s": 0.04}
    assert rows["restore"]["ok"] == 1 and rows["restore"]["median_s"] == 0.06
    assert "task-exit" not in rows


def test_no_path_and_unwritable_path_never_raise(tmp_path: Path) -> None:
    EventLog(None).record("checkpoint", ok=True)
    (tmp_path / "file").write_text("")
    EventLog(tmp_path / "file" / "events.log").record("checkpoint", ok=True)
    assert summarise(tmp_path / "missing.log").rows() == []
