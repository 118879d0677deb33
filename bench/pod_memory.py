"""Memory of one shim serving a pod of 1, 10 and 50 running containers, against the runc shim
(which also serves a pod from one process, grouped by ``io.kubernetes.cri.sandbox-id``).

    python -m bench.pod_memory [--sizes 1,10,50] [--record docs/benchmarks.md]

For each size and runtime: start N ``sleep`` containers annotated with one sandbox id, then
read the shim's VmRSS and PSS. The per-container cost is the slope between sizes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.common import OURS, REF, RUNC, bench_containerd, record
from bench.memory import measure


def pod(ctd: object, runtime: str, n: int) -> dict[str, int]:
    from tests.harness.containerd import PrivateContainerd

    assert isinstance(ctd, PrivateContainerd)
    sandbox = f"pod-{uuid.uuid4().hex[:8]}"
    ids = [f"{sandbox}-{i}" for i in range(n)]
    try:
        for cid in ids:
            ctd.ctr("run", "-d", "--runtime", runtime, "--annotation",
                    f"io.kubernetes.cri.sandbox-id={sandbox}", REF, cid, "sleep", "600")
        time.sleep(1.0)
        return measure(ctd, ids[0])
    finally:
        for cid in ids:
            ctd.remove_container(cid)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="pod shim memory: ours vs runc")
    ap.add_argument("--sizes", default="1,10,50")
    ap.add_argument("--runtime", default=OURS)
    ap.add_argument("--record", type=Path)
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    results: dict[tuple[str, int], dict[str, int]] = {}
    try:
        with bench_containerd() as ctd:
            for n in sizes:
                for rt in (args.runtime, RUNC):
                    results[(rt, n)] = pod(ctd, rt, n)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    rows = ["| containers | ours VmRSS MB | ours PSS MB | runc VmRSS MB | runc PSS MB |",
            "|---|---|---|---|---|"]
    for n in sizes:
        o, r = results[(args.runtime, n)], results[(RUNC, n)]
        rows.append(f"| {n} | {o['rss'] / 1024:.1f} | {o['pss'] / 1024:.1f} | "
                    f"{r['rss'] / 1024:.1f} | {r['pss'] / 1024:.1f} |")
    # The slope between the two largest pods: a fresh node's first shim is forked by `start`
    # itself (no zygote yet), later ones by the zygote, which shares its imported pages, so
    # the 1-container figure is not on the same line.
    lo, hi = (sizes[-2], sizes[-1]) if len(sizes) > 1 else (sizes[0], sizes[0])

    def slope(rt: str) -> float:
        return (results[(rt, hi)]["rss"] - results[(rt, lo)]["rss"]) / 1024 / max(hi - lo, 1)

    body = "\n".join(rows) + (
        f"\n\nPer-container cost ({lo}→{hi}): ours **{slope(args.runtime) * 1024:.0f} kB**, "
        f"runc {slope(RUNC) * 1024:.0f} kB of VmRSS per container.\n")
    print(body)
    if args.record:
        record(args.record, "Shim memory for a pod of N containers: ours vs runc", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
