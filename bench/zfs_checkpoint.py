"""Checkpoint and restore times of a running container on zfs-fuse.

A busybox container runs through ``io.containerd.proxmox.v2`` on a private containerd with a
zfs-fuse pool configured; it keeps rewriting a file in its root filesystem. Measured:

- checkpoint: ``ZfsStorage.checkpoint`` (snapshot + listing + retention), what the Task API and
  ``proxmox-lxcri checkpoint`` call; filesystem only (CRIU does not work on this kernel);
- restore: ``ZfsStorage.restore`` of the latest checkpoint (``zfs rollback`` of the mounted,
  in-use dataset);
- the same two through the ``proxmox-lxcri`` command (a new Python process each time).

The earlier Zig project advertised 1 to 3 s (checkpoint) and 2 to 5 s (restore); the goal here
is under 0.1 s each.

    .venv/bin/python -m bench.zfs_checkpoint [-n 9] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

from bench.common import OURS, REF, bench_containerd, median, percentile, record
from storage.runner import ThreadRunner
from storage.service import ZfsStorage
from storage.settings import StorageSettings
from storage.zfs_cli import ZfsCli
from tests.harness.zfs import ZfsFuse, test_pool, zfs_skip_reason

ROOT = Path(__file__).resolve().parents[1]


def fmt(values: list[float]) -> str:
    return f"median {median(values) * 1000:.1f} ms, p90 {percentile(values, 90) * 1000:.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=9, help="samples")
    ap.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = ap.parse_args()
    reason = zfs_skip_reason()
    if reason:
        raise SystemExit(f"benchmark cannot run here: {reason}")
    daemon = ZfsFuse()
    daemon.ensure()
    try:
        with test_pool(prefix="lxb") as pool, bench_containerd() as ctd:
            config = pool.folder / "config.toml"
            config.write_text(f'[storage]\nzfs_pool = "{pool.name}"\ncriu = "never"\n'
                              f"checkpoint_keep = {args.n + 2}\n")
            cid = "bench-ckpt"
            ctd.ctr("run", "-d", "--runtime", OURS, "--runtime-config-path", str(config), REF,
                    cid, "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /count; "
                                     "sleep 0.05; done")
            try:
                results = run(pool.name, cid, args.n, config, ctd.env)
            finally:
                ctd.remove_container(cid)
    finally:
        daemon.stop()
    for name, values in results.items():
        print(f"{name:<28} {fmt(values)}")
    if args.record:
        body = ["Checkpoint and restore of a running busybox container (it rewrites a file "
                f"every 50 ms) on zfs-fuse 0.7, n={args.n} (`python -m bench.zfs_checkpoint`). "
                "Filesystem checkpoints (CRIU fails on this kernel). The earlier Zig project "
                "advertised 1-3 s / 2-5 s; the goal is under 100 ms each.", "",
                "| Operation | Median | p90 |", "|---|---|---|"]
        for name, values in results.items():
            body.append(f"| {name} | {median(values) * 1000:.1f} ms | "
                        f"{percentile(values, 90) * 1000:.1f} ms |")
        record(ROOT / "docs" / "benchmarks.md", "ZFS checkpoint and restore", "\n".join(body))


def run(pool: str, cid: str, n: int, config: Path, env: dict[str, str]) -> dict[str, list[float]]:
    runner = ThreadRunner()
    storage = ZfsStorage(ZfsCli(runner), runner, pool)
    settings = StorageSettings(pool=pool, criu="never", checkpoint_keep=n + 2)
    out: dict[str, list[float]] = {"checkpoint (API)": [], "restore (API)": [],
                                   "checkpoint (proxmox-lxcri)": [],
                                   "restore (proxmox-lxcri)": []}

    async def api() -> None:
        for _ in range(n):
            t = time.perf_counter()
            await storage.checkpoint(cid, settings)
            out["checkpoint (API)"].append(time.perf_counter() - t)
            await asyncio.sleep(0.1)
            t = time.perf_counter()
            await storage.restore(cid)
            out["restore (API)"].append(time.perf_counter() - t)

    asyncio.run(api())
    cli = [sys.executable, "-c", "from shim.operator_cli import main; main()"]
    for _ in range(n):
        for op, key in (("checkpoint", "checkpoint (proxmox-lxcri)"),
                        ("restore", "restore (proxmox-lxcri)")):
            t = time.perf_counter()
            subprocess.run([*cli, op, cid, "--config", str(config)], check=True, cwd=ROOT,
                           env=env, capture_output=True, timeout=60)
            out[key].append(time.perf_counter() - t)
    return out


if __name__ == "__main__":
    main()
