"""``proxmox-lxcri events`` (shim/events_cli.py) over a real event log in a temp state root, and
the log's bound (runtime/oplog.py rotation)."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

from runtime import oplog
from runtime.oplog import OpLog
from shim.events_cli import format_event

REPO = Path(__file__).resolve().parents[3]


def cli(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from shim.operator_cli import main; main()", "--root",
         str(root), "events", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})


def test_readable_line() -> None:
    line = format_event({"ts": 1764139200.5, "source": "task", "event": "create", "ok": True,
                         "seconds": 0.2013, "namespace": "default", "container_id": "c1",
                         "pid": 4242})
    assert line.split() == ["2025-11-26T06:40:00.500Z", "task", "create", "ok", "201.3ms",
                            "default/c1", "pid=4242"]
    bad = format_event({"ts": 1.0, "source": "task", "event": "exec", "ok": False,
                        "seconds": 0.001, "namespace": "ns", "container_id": "c\n1",
                        "exec_id": "e1", "error": "no such file\nor directory"})
    assert "\n" not in bad
    assert " FAILED " in bad and ' exec=e1 ' in bad
    assert bad.endswith('error="no such file\\nor directory"')


def test_prints_the_log_then_follows_new_events(tmp_path: Path) -> None:
    path = oplog.path_under(tmp_path)
    log = OpLog(path, source="task")
    for i in range(3):
        log.record("create", seconds=0.1, namespace="ns", container_id=f"old{i}")

    done = cli(tmp_path, "--json")
    out, err = done.communicate(timeout=30)
    assert done.returncode == 0, err
    assert [json.loads(x)["container_id"] for x in out.splitlines()] == ["old0", "old1", "old2"]

    proc = cli(tmp_path, "--follow", "--tail", "1")
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        assert sel.select(timeout=30), "no output from events --follow"
        assert "old2" in proc.stdout.readline()  # --tail 1: the last event already there
        lines: list[str] = []
        # Write until the follower shows a line written after it started (it may open the file
        # after the first writes: those it skips, as `tail -f` does).
        n = 0
        while not any("new" in x for x in lines):
            assert time.monotonic() < deadline, (lines, proc.poll())
            log.record("start", seconds=0.01, namespace="ns", container_id=f"new{n}")
            n += 1
            if sel.select(timeout=0.3):
                lines.append(proc.stdout.readline())
        assert " start " in next(x for x in lines if "new" in x)
    finally:
        proc.kill()  # our own child, by PID
        proc.wait(10)


def test_follow_survives_rotation(tmp_path: Path) -> None:
    path = oplog.path_under(tmp_path)
    log = OpLog(path, source="task", max_bytes=2048)
    stop = time.monotonic() + 30
    follower = oplog.follow(path, poll_s=0.01, from_end=False, stop=stop)
    for i in range(40):  # ~100 bytes each: the log rotates at least once
        log.record("kill", seconds=0.001, namespace="ns", container_id=f"c{i:03d}")
    seen = []
    for item in follower:
        seen.append(item["container_id"])
        if len(seen) == 40 or seen[-1] == "c039":
            break
    # Every event is seen once and in order even though the file was renamed under the reader
    # (at most the events rotated away before the reader opened the file are missing).
    assert seen == sorted(seen) and len(seen) == len(set(seen)) and seen[-1] == "c039"


def test_rotation_keeps_the_log_bounded(tmp_path: Path) -> None:
    path = oplog.path_under(tmp_path)
    log = OpLog(path, source="task", max_bytes=4096)
    for i in range(1000):
        log.record("create", ok=i % 7 != 0, seconds=0.25, namespace="ns",
                   container_id=f"c{i:04d}", error=None if i % 7 else "boom")
    assert path.stat().st_size <= 4096
    rotated = path.with_name(path.name + ".1")
    assert rotated.stat().st_size <= 4096
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")) == [
        "events.log", "events.log.1"]
    ids = [e["container_id"] for e in oplog.read(path)]
    assert ids == sorted(ids) and ids[-1] == "c0999"  # the newest kept, oldest first
