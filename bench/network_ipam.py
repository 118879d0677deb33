"""IP allocation time in a pool holding 1,000 leases (and in an empty one, for comparison).

    python -m bench.network_ipam [--leases 1000] [--rounds 300] [--record docs/benchmarks.md]

Each round allocates one address for a new owner and releases it (two locked
read-modify-write cycles of the pool file, each with an fsync). The state directory is on /run,
like the default one (``<state root>/network``).
"""

from __future__ import annotations

import argparse
import shutil
import time
import uuid
from pathlib import Path

from bench.common import median, percentile, record
from network.config import Pool, parse_pool
from network.ipam import Ipam


def rounds(ipam: Ipam, pool: Pool, n: int) -> tuple[list[float], list[float]]:
    alloc: list[float] = []
    free: list[float] = []
    for i in range(n):
        t = time.perf_counter()
        ipam.allocate(pool, f"bench/round{i}")
        alloc.append(time.perf_counter() - t)
        t = time.perf_counter()
        ipam.release(pool.name, f"bench/round{i}")
        free.append(time.perf_counter() - t)
    return alloc, free


def us(x: float) -> str:
    return f"{x * 1e6:.0f} µs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leases", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--record", type=Path)
    args = ap.parse_args()
    pool = parse_pool("bench", {"bridge": "br0", "subnet": "10.200.0.0/20"})
    state = Path(f"/run/lxcri-bench-ipam-{uuid.uuid4().hex[:6]}")
    try:
        empty_alloc, empty_free = rounds(Ipam(state / "empty"), pool, args.rounds)
        full = Ipam(state / "full")
        t = time.perf_counter()
        for i in range(args.leases):
            full.allocate(pool, f"bench/lease{i}")
        fill = time.perf_counter() - t
        alloc, free = rounds(full, pool, args.rounds)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    body = "\n".join([
        f"IP allocation, {args.rounds} rounds of allocate + release, pool /20:",
        "",
        "| pool | allocate median | allocate p95 | release median |",
        "|---|---|---|---|",
        f"| empty | {us(median(empty_alloc))} | {us(percentile(empty_alloc, 95))} | "
        f"{us(median(empty_free))} |",
        f"| {args.leases} leases | {us(median(alloc))} | {us(percentile(alloc, 95))} | "
        f"{us(median(free))} |",
        "",
        f"Filling the pool with {args.leases} leases took {fill:.2f} s "
        f"({us(fill / args.leases)} per lease).",
    ])
    print(body)
    if args.record:
        record(args.record, "IP allocation at 1,000 leases", body)


if __name__ == "__main__":
    main()
