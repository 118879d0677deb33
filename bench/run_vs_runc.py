"""`ctr run --rm <image> <id> echo hi` wall time: our runtime against the runc shim.

    python -m bench.run_vs_runc [--runs 20] [--warmup 2] [--runtime io.containerd.proxmox.v2]
                                [--tmpfs-root] [--record docs/benchmarks.md]

Both runtimes share one private containerd and image and run INTERLEAVED (A, B, A, B ...), so
drift of this noisy machine hits both equally. The figure that matters is the ratio ours/runc.
``--tmpfs-root`` puts our state root on a tmpfs, as ``/run`` is on Proxmox VE (the test VMs'
``/run`` is on disk, where the runtime's fsyncs cost; runc's state stays where it is).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.common import OURS, REF, RUNC, bench_containerd, median, percentile, record
from tests.harness.containerd import PrivateContainerd


def one_run(ctd: PrivateContainerd, runtime: str) -> float:
    """Seconds for one ``ctr run --rm``; raises if the container does not print ``hi``."""
    cid = f"b-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    r = ctd.ctr("run", "--rm", "--runtime", runtime, REF, cid, "echo", "hi", check=False)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0 or r.stdout.strip() != "hi":
        ctd.remove_container(cid)
        raise RuntimeError(f"{runtime}: rc {r.returncode}, stdout {r.stdout!r}, "
                           f"stderr {r.stderr.strip()!r}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="ctr run --rm: our runtime vs the runc shim")
    ap.add_argument("--runs", type=int, default=20, help="measured runs per runtime (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured runs per runtime first")
    ap.add_argument("--runtime", default=OURS, help=f"runtime under test (default {OURS})")
    ap.add_argument("--tmpfs-root", action="store_true",
                    help="our state root on a tmpfs, as /run is on Proxmox VE")
    ap.add_argument("--record", type=Path, help="append the result to this Markdown file")
    args = ap.parse_args(argv)
    runtimes = [args.runtime, RUNC]
    # The same name twice (runc vs runc) is a check of the machinery: keep the columns apart.
    labels = ["ours: " + args.runtime, "runc: " + RUNC]
    times: list[list[float]] = [[], []]
    try:
        with bench_containerd(tmpfs_root=args.tmpfs_root) as ctd:
            for _ in range(args.warmup):
                for rt in runtimes:
                    one_run(ctd, rt)
            for i in range(args.runs):
                for k, rt in enumerate(runtimes):
                    times[k].append(one_run(ctd, rt))
                if sys.stderr.isatty():
                    print(f"\rrun {i + 1}/{args.runs}", end="", file=sys.stderr, flush=True)
            if sys.stderr.isatty():
                print(file=sys.stderr)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1

    rows = ["| runtime | runs | median ms | p90 ms | min ms | max ms |",
            "|---|---|---|---|---|---|"]
    for label, ts in zip(labels, times, strict=True):
        ms = [t * 1000 for t in ts]
        rows.append(f"| {label} | {len(ms)} | {median(ms):.1f} | {percentile(ms, 90):.1f} | "
                    f"{min(ms):.1f} | {max(ms):.1f} |")
    ratio = median(times[0]) / median(times[1])
    ratio90 = percentile(times[0], 90) / percentile(times[1], 90)
    body = "\n".join(rows) + (
        f"\n\nRatio ours/runc: median **{ratio:.2f}**, p90 {ratio90:.2f} "
        f"(`ctr run --rm {REF} <id> echo hi`, interleaved, {args.warmup} warm-up runs each"
        + ("; our state root on a tmpfs" if args.tmpfs_root else "")
        + "; goal <= 1.0, never above 1.5)\n")
    print(body)
    if args.record:
        record(args.record, "ctr run --rm: ours vs runc", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
