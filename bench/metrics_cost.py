"""What the metrics cost: `ctr run --rm <image> <id> echo hi` with the metrics endpoint off and on.

    python -m bench.metrics_cost [--runs 20] [--warmup 2] [--scrape-interval 0.5]
                                 [--record docs/benchmarks.md]

"on" = `proxmox-lxcri metrics --listen 127.0.0.1:<port>` runs against the runtime's state root
and is scraped every ``--scrape-interval`` seconds (far more often than Prometheus' usual 15 s)
while the containers run. "off" = no endpoint. The runc shim runs in the same loop as the
reference. All three run interleaved on one private containerd (off, on, runc, off, on, ...),
so drift of this noisy machine hits each alike. The figure that matters: on/off, which should
be within the noise of off/off (the spread between repeated "off" runs is printed with it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bench.common import OURS, RUNC, bench_containerd, median, percentile, record
from bench.run_vs_runc import one_run
from tests.harness.containerd import PrivateContainerd

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def endpoint(ctd: PrivateContainerd, interval: float) -> Iterator[list[int]]:
    """The metrics endpoint plus a scraper thread (the bench's, not the runtime's)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", "from shim.operator_cli import main; main()",
                             "metrics", "--listen", f"127.0.0.1:{port}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PROXMOX_LXCRI_ROOT": str(ctd.lxcri_root)})
    stop = threading.Event()
    scrapes = [0]

    def scrape() -> None:
        while not stop.wait(interval):
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                    r.read()
                scrapes[0] += 1
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "serving metrics on ..."
        t = threading.Thread(target=scrape, daemon=True)
        t.start()
        yield scrapes
        stop.set()
        t.join(timeout=15)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="ctr run --rm with the metrics endpoint off/on")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--scrape-interval", type=float, default=0.5)
    ap.add_argument("--record", type=Path)
    args = ap.parse_args(argv)
    off: list[float] = []
    off2: list[float] = []
    on: list[float] = []
    runc: list[float] = []
    scrapes = 0
    try:
        with bench_containerd() as ctd:
            for _ in range(args.warmup):
                one_run(ctd, OURS)
                one_run(ctd, RUNC)
            for _ in range(args.runs):
                off.append(one_run(ctd, OURS))
                with endpoint(ctd, args.scrape_interval) as n:
                    on.append(one_run(ctd, OURS))
                    time.sleep(args.scrape_interval)  # at least one scrape per run
                scrapes += n[0]
                off2.append(one_run(ctd, OURS))
                runc.append(one_run(ctd, RUNC))
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    rows = ["| case | runs | median ms | p90 ms |", "|---|---|---|---|"]
    for label, ts in (("metrics off", off), ("metrics on (endpoint scraped)", on),
                      ("metrics off, again", off2), ("runc", runc)):
        ms = [t * 1000 for t in ts]
        rows.append(f"| {label} | {len(ms)} | {median(ms):.1f} | {percentile(ms, 90):.1f} |")
    body = "\n".join(rows) + (
        f"\n\nRatio on/off: median **{median(on) / median(off):.3f}** (noise: off again/off "
        f"{median(off2) / median(off):.3f}); ours off/runc {median(off) / median(runc):.2f}. "
        f"{scrapes} scrapes every {args.scrape_interval} s during the 'on' runs.\n")
    print(body)
    if args.record:
        record(args.record, "metrics cost: ctr run --rm with the endpoint off and on", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
