"""Where the wall time of ``ctr run --rm <image> <id> echo hi`` goes, per part, for our runtime
and the runc shim (and any other runtime names given), interleaved in one run.

    python -m bench.run_parts [--runs 20] [--also RUNTIME ...] [--record docs/benchmarks.md]

The parts come from the kernel's scheduler tracepoints (``perf record -a -e
sched:sched_process_{exec,exit,fork}``, timestamps on CLOCK_MONOTONIC), kept to the processes of
this benchmark's containerd (its descendants by fork, plus our zygote and its spare, which are
re-parented to init): when the ``start`` action is exec'd and exits, when the container's monitor
(``lxcri-start``, or ``runc create``) is exec'd, when the program (``echo``) is exec'd and exits,
when the ``delete`` action is exec'd and exits, and when ``ctr`` does. Needs ``perf`` and root.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

from bench.common import OURS, REF, RUNC, bench_containerd, record

PARTS = (
    "ctr exec → start action exec (containerd)",
    "start action (exec → exit)",
    "start exit → monitor exec (daemon ready, Create up to the monitor)",
    "monitor exec → program exec (LXC start and gate / runc create; Start)",
    "program exit → delete action exec (exit seen, Wait, Delete, Shutdown)",
    "delete action (exec → exit)",
    "delete action exit → ctr exit",
    "total (ctr exec → exit)",
)

Event = tuple[float, int, str, str]  # time, pid (tgid), event, trace text


def zygote_pids(root: str) -> set[int]:
    """Our zygote and its spare for this state root (their environment names it)."""
    found = set()
    want = f"PROXMOX_LXCRI_ROOT={root}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
            if comm not in ("lxcri-zygote", "lxcri-spare"):
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if want in f.read().split(b"\0"):
                    found.add(int(entry))
        except OSError:
            continue
    return found


def read_events(data: Path) -> list[Event]:
    out = subprocess.run(["perf", "script", "-i", str(data), "-F", "pid,time,event,trace"],
                         capture_output=True, text=True, check=True).stdout
    events = []
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+(\d+\.\d+):\s+sched:sched_process_(\w+):\s+(.*)", line)
        if m:
            events.append((float(m[2]), int(m[1]), m[3], m[4]))
    events.sort()
    return events


def descendants(events: list[Event], seeds: set[int]) -> set[int]:
    mine = set(seeds)
    for _, pid, kind, trace in events:
        if kind == "fork" and pid in mine:
            child = re.search(r"child_pid=(\d+)", trace)
            if child:
                mine.add(int(child[1]))
    return mine


def parts_of(events: list[Event], t0: float, t1: float) -> list[float] | None:
    """The parts (seconds) of the run between t0 and t1, or None if one is missing."""
    window = [e for e in events if t0 - 0.002 <= e[0] <= t1 + 0.002]

    def exec_of(suffixes: tuple[str, ...], after: float = 0.0) -> tuple[float, int] | None:
        for ts, pid, kind, trace in window:
            if kind == "exec" and ts >= after:
                name = trace.split()[0].removeprefix("filename=")
                if name.endswith(suffixes) or any(s in name for s in suffixes if "/" not in s):
                    return ts, pid
        return None

    def exit_of(pid: int, after: float) -> float | None:
        for ts, p, kind, trace in window:
            # The whole process (perf prints group_dead as 1 or true, by version).
            if kind == "exit" and p == pid and ts >= after and re.search(
                    r"group_dead=(1|true)\b", trace):
                return ts
        return None

    ctr = exec_of(("/ctr",))
    start = exec_of(("containerd-shim-",))
    monitor = exec_of(("/lxcri-start", "/runc"))
    program = exec_of(("/echo",))
    if not (ctr and start and monitor and program):
        return None
    start_exit = exit_of(start[1], start[0])
    program_exit = exit_of(program[1], program[0])
    if start_exit is None or program_exit is None:
        return None
    delete = exec_of(("containerd-shim-",), after=program_exit)
    if delete is None:
        return None
    delete_exit = exit_of(delete[1], delete[0])
    ctr_exit = exit_of(ctr[1], ctr[0])
    if delete_exit is None or ctr_exit is None:
        return None
    return [start[0] - ctr[0], start_exit - start[0], monitor[0] - start_exit,
            program[0] - monitor[0], delete[0] - program_exit, delete_exit - delete[0],
            ctr_exit - delete_exit, ctr_exit - ctr[0]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="ctr run --rm, part by part: ours vs runc")
    ap.add_argument("--runs", type=int, default=20, help="measured runs per runtime")
    ap.add_argument("--also", action="append", default=[], metavar="RUNTIME",
                    help="another runtime name to measure alongside (e.g. another checkout's)")
    ap.add_argument("--record", type=Path, help="append the result to this Markdown file")
    args = ap.parse_args(argv)
    if shutil.which("perf") is None:
        print("benchmark cannot run here: perf is not installed", file=sys.stderr)
        return 1
    runtimes = [OURS, *args.also, RUNC]
    marks: list[tuple[str, float, float]] = []
    load = []
    with tempfile.TemporaryDirectory(prefix="lxcri-parts-") as tmp, bench_containerd() as ctd:
        data = Path(tmp) / "perf.data"
        for _ in range(3):
            for rt in runtimes:
                ctd.ctr("run", "--rm", "--runtime", rt, REF, f"w-{uuid.uuid4().hex[:8]}",
                        "echo", "hi", check=False)
        seeds = {p for p in (ctd.pid,) if p} | zygote_pids(str(ctd.lxcri_root))
        perf = subprocess.Popen(
            ["perf", "record", "-q", "-k", "mono", "-a", "-o", str(data),
             "-e", "sched:sched_process_exec", "-e", "sched:sched_process_exit",
             "-e", "sched:sched_process_fork"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.5)  # perf is recording
            load.append(os.getloadavg()[0])
            for i in range(args.runs):
                for rt in runtimes if i % 2 == 0 else runtimes[::-1]:
                    t0 = time.monotonic()
                    r = ctd.ctr("run", "--rm", "--runtime", rt, REF,
                                f"p-{uuid.uuid4().hex[:8]}", "echo", "hi", check=False)
                    t1 = time.monotonic()
                    if r.returncode == 0 and r.stdout.strip() == "hi":
                        marks.append((rt, t0, t1))
                    seeds |= zygote_pids(str(ctd.lxcri_root))  # a new spare each run
            load.append(os.getloadavg()[0])
            time.sleep(0.3)
        finally:
            perf.send_signal(2)
            perf.wait()
        events = read_events(data)
    mine = descendants(events, seeds) | {pid for _, pid, kind, trace in events
                                         if kind == "exec" and trace.split()[0].endswith("/ctr")}
    events = [e for e in events if e[1] in mine]
    found: dict[str, list[list[float]]] = defaultdict(list)
    for rt, t0, t1 in marks:
        parts = parts_of(events, t0, t1)
        if parts is not None:
            found[rt].append(parts)
    labels = ["ours" if rt == OURS else "runc" if rt == RUNC else rt for rt in runtimes]
    rows = ["| part (median ms) | " + " | ".join(labels) + " |",
            "|---|" + "---|" * len(runtimes)]
    for i, part in enumerate(PARTS):
        cells = [f"{statistics.median(p[i] for p in found[rt]) * 1000:.1f}" if found[rt] else "-"
                 for rt in runtimes]
        rows.append(f"| {part} | " + " | ".join(cells) + " |")
    counts = ", ".join(f"{label} {len(found[rt])}"
                       for label, rt in zip(labels, runtimes, strict=True))
    body = "\n".join(rows) + (
        f"\n\nRuns with every part found: {counts} (of {args.runs} each, interleaved); "
        f"1-minute load average {load[0]:.1f} before, {load[-1]:.1f} after. Medians per part: "
        "they need not add up to the median total.\n")
    print(body)
    if args.record:
        record(args.record, "ctr run --rm, part by part: ours vs runc", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
