"""Memory of one shim daemon holding one running container: our runtime against the runc shim.

    python -m bench.memory [--runtime io.containerd.proxmox.v2] [--record docs/benchmarks.md]

Both containers (``ctr run -d ... sleep 300``) run at the same time on one private containerd.
Each shim's PID is found from its bundle's ``address`` file: the process listening on that unix
socket (/proc/net/unix inode -> /proc/*/fd), never by process name. VmRSS comes from
/proc/PID/status, PSS (shared pages divided among their users) from /proc/PID/smaps_rollup.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.common import OURS, REF, RUNC, bench_containerd, record
from tests.harness.containerd import PrivateContainerd


def kb_field(path: str, name: str) -> int:
    """A ``Name:  123 kB`` field of a /proc file, in kB."""
    with open(path) as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise KeyError(f"{name} not in {path}")


def measure(ctd: PrivateContainerd, cid: str) -> dict[str, int]:
    pid = ctd.shim_pid(cid)
    if pid is None:
        raise RuntimeError(f"no process listens on the address of {cid}'s bundle")
    return {
        "pid": pid,
        "rss": kb_field(f"/proc/{pid}/status", "VmRSS"),
        "pss": kb_field(f"/proc/{pid}/smaps_rollup", "Pss"),
        "threads": kb_field(f"/proc/{pid}/status", "Threads"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="shim daemon memory: our runtime vs the runc shim")
    ap.add_argument("--runtime", default=OURS, help=f"runtime under test (default {OURS})")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds to wait after start before measuring (default 1)")
    ap.add_argument("--record", type=Path, help="append the result to this Markdown file")
    args = ap.parse_args(argv)
    labels = ["ours: " + args.runtime, "runc: " + RUNC]
    results: list[dict[str, int]] = []
    try:
        with bench_containerd() as ctd:
            ids = []
            try:
                for rt in (args.runtime, RUNC):
                    cid = f"m-{uuid.uuid4().hex[:8]}"
                    ids.append(cid)
                    ctd.ctr("run", "-d", "--runtime", rt, REF, cid, "sleep", "300")
                    if ctd.task_status(cid) != "RUNNING":
                        raise RuntimeError(f"{rt}: task {cid} is not RUNNING")
                time.sleep(args.settle)  # let lazy start-up work finish in both shims
                results = [measure(ctd, cid) for cid in ids]
            finally:
                for cid in ids:
                    ctd.remove_container(cid)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1

    rows = ["| shim daemon | PID | threads | VmRSS MB | PSS MB |", "|---|---|---|---|---|"]
    for label, r in zip(labels, results, strict=True):
        rows.append(f"| {label} | {r['pid']} | {r['threads']} | {r['rss'] / 1024:.1f} | "
                    f"{r['pss'] / 1024:.1f} |")
    ours, runc = results
    body = "\n".join(rows) + (
        f"\n\nRatio ours/runc: VmRSS **{ours['rss'] / runc['rss']:.2f}**, "
        f"PSS {ours['pss'] / runc['pss']:.2f} (one running container, `sleep 300`, each; "
        "goal: RSS at or below runc's, never above 35 MB)\n")
    print(body)
    if args.record:
        record(args.record, "Shim daemon memory: ours vs runc", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
