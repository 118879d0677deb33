"""``ctr task exec ... true`` latency: our runtime against the runc shim, interleaved.

    python -m bench.exec_vs_runc [--runs 20] [--record docs/benchmarks.md]

One running container per runtime (``sleep 600``) on one private containerd; each round runs
one exec in each, alternating, and the medians' ratio is the figure (goal at most 1.0).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.common import OURS, REF, RUNC, bench_containerd, median, percentile, record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="exec latency: our runtime vs the runc shim")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--runtime", default=OURS)
    ap.add_argument("--record", type=Path)
    args = ap.parse_args(argv)
    times: dict[str, list[float]] = {args.runtime: [], RUNC: []}
    try:
        with bench_containerd() as ctd:
            ids = {rt: f"x-{uuid.uuid4().hex[:8]}" for rt in times}
            try:
                for rt, cid in ids.items():
                    ctd.ctr("run", "-d", "--runtime", rt, REF, cid, "sleep", "600")
                for i in range(args.runs + 2):
                    for rt, cid in ids.items():
                        t0 = time.perf_counter()
                        ctd.ctr("task", "exec", "--exec-id", f"e{i}", cid, "true")
                        if i >= 2:  # two warm-up rounds
                            times[rt].append((time.perf_counter() - t0) * 1000)
            finally:
                for cid in ids.values():
                    ctd.remove_container(cid)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    rows = ["| runtime | runs | median ms | p90 ms |", "|---|---|---|---|"]
    for rt, ts in times.items():
        label = ("ours: " if rt != RUNC else "runc: ") + rt
        rows.append(f"| {label} | {len(ts)} | {median(ts):.1f} | {percentile(ts, 90):.1f} |")
    ratio = median(times[args.runtime]) / median(times[RUNC])
    body = "\n".join(rows) + (f"\n\nRatio ours/runc: median **{ratio:.2f}** "
                              "(`ctr task exec --exec-id eN ID true`, interleaved; goal <= 1.0)\n")
    print(body)
    if args.record:
        record(args.record, "Exec latency: ours vs runc", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
