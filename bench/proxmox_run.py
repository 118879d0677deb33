"""`ctr run --rm <image> <id> echo hi` through the Proxmox backend against the runc shim, with
the Proxmox API round trips counted and the time split between API round trips and the rest
(the tasks' work on the node: clone, LXC start/stop, destroy; plus containerd and the shim).

    python -m bench.proxmox_run [--runs 5] [--record docs/benchmarks.md]

Runs against the Proxmox stand-in (tests/pvestandin, ``local-zfs`` on zfs-fuse) twice: with
zero task durations (what the backend itself costs) and with the indicative durations of a
node (proxmox-api.md §4.3: start, stop and destroy about 1 s; a linked clone 0.5 s) through
the stand-in's ``task_delay``. Ours and runc run interleaved on one private containerd.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import REF, RUNC, bench_containerd, median, record
from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import PROXMOX_RUNTIME
from tests.harness.zfs import ZfsFuse, test_pool
from tests.integration.test_proxmox_backend import write_config
from tests.pvestandin.fixture import StandInHandle, random_range, running_standin
from tests.pvestandin.server import Options

REALISTIC = {"vzstart": 1.0, "vzstop": 1.0, "vzdestroy": 1.0, "vzclone": 0.5}


def _api_seconds(log: Path, since: float) -> float:
    total = 0.0
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if item.get("source") == "proxmox" and item.get("event") == "api" \
                and item.get("ts", 0) >= since:
            total += float(item.get("seconds") or 0)
    return total


def one(ctd: PrivateContainerd, flags: list[str]) -> float:
    cid = f"b-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    r = ctd.ctr("run", "--rm", *flags, REF, cid, "echo", "hi", check=False, timeout=300)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0 or r.stdout.strip() != "hi":
        ctd.remove_container(cid)
        raise RuntimeError(f"rc {r.returncode}, stdout {r.stdout!r}, stderr {r.stderr!r}")
    return elapsed


def measure(ctd: PrivateContainerd, pve: StandInHandle, config: Path, runs: int
            ) -> list[str]:
    ours = ["--runtime", PROXMOX_RUNTIME, "--runtime-config-path", str(config)]
    runc = ["--runtime", RUNC]
    log = ctd.lxcri_root / "runtime" / "events.log"
    one(ctd, ours)  # the image template (once per image and node), and warm caches
    one(ctd, runc)
    t_ours, t_runc, calls, api_s = [], [], [], []
    for _ in range(runs):
        n0, since = len(pve.standin.api.calls), time.time()
        t_ours.append(one(ctd, ours))
        calls.append(len(pve.standin.api.calls) - n0)
        api_s.append(_api_seconds(log, since))
        t_runc.append(one(ctd, runc))
    m_ours, m_runc, m_api = median(t_ours) * 1000, median(t_runc) * 1000, median(api_s) * 1000
    return [f"{median(calls):.0f}", f"{m_ours:.0f}", f"{m_api:.0f}", f"{m_ours - m_api:.0f}",
            f"{m_runc:.0f}", f"{m_ours / m_runc:.1f}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--record", type=Path)
    args = ap.parse_args(argv)
    rows = ["| task durations | API calls per run | ours median ms | of which API round "
            "trips ms | rest (tasks on the node, containerd, shim) ms | runc median ms | "
            "ours/runc |", "|---|---|---|---|---|---|---|"]
    ZfsFuse().ensure()
    with bench_containerd() as ctd, tempfile.TemporaryDirectory() as tmp:
        for label, delay in (("zero", {}), ("realistic " + ", ".join(
                f"{k} {v:g} s" for k, v in REALISTIC.items()), REALISTIC)):
            with test_pool(prefix="pvs") as pool, running_standin(Options(
                    zfs_pool=pool.name, nextid_range=random_range(), task_delay=delay),
                    pool) as pve:
                folder = Path(tmp) / label.split()[0]
                folder.mkdir()
                rows.append(f"| {label} | " + " | ".join(
                    measure(ctd, pve, write_config(pve, folder), args.runs)) + " |")
    body = "\n".join(rows) + (
        f"\n\n`ctr run --rm {REF} <id> echo hi`, {args.runs} runs each after one warm-up "
        "(which also makes the image template), against the Proxmox stand-in (local-zfs on "
        "zfs-fuse). API round trips: the sum of the shim's per-call times (its event log); "
        "the task polling sleeps between them count in the rest.\n")
    print(body)
    if args.record:
        record(args.record, "ctr run --rm through the Proxmox backend vs runc", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
