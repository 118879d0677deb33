"""Network setup time per container and its growth from 1 to 100 containers.

    python -m bench.network_setup [--count 100] [--record docs/benchmarks.md]

Drives the network provisioner as the supervisor does (``prepare`` = bridge check, lease,
namespace, veth pair, address, route, DNS files; ``release`` = the reverse), for ``count``
containers one after the other on one pool, all on a bridge inside a namespace the benchmark
makes (``lxb-<uid>``), then releases them. The state directory is on /run like the default one.
Everything is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import median, percentile, record
from network.provisioner import NetworkProvisioner
from runtime.types import CreateConfig


def settings(uid: str, state: Path) -> dict[str, Any]:
    return {"network": {"state_dir": str(state), "bridge_netns": f"/run/netns/lxb-{uid}",
                        "pools": {"bench": {"bridge": f"lxbb{uid}", "subnet": "10.254.0.0/22",
                                            "gateway": "10.254.0.1",
                                            "dns": ["10.254.0.1"]}}}}


def config(uid: str, i: int, s: dict[str, Any], tmp: Path) -> CreateConfig:
    spec = {"process": {"args": ["sh"]}, "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]},
            "annotations": {"lxcri.proxmox.io/network": "bench"}}
    cid = f"b{i}-{uid}"
    return CreateConfig(id=cid, namespace="bench", bundle=tmp, spec=spec,
                        state_dir=tmp / cid, settings=s)


async def measure(count: int, tmp: Path, uid: str) -> tuple[list[float], list[float]]:
    s = settings(uid, tmp / "state")
    prov = NetworkProvisioner(tmp / "state")
    made: list[CreateConfig] = []
    setup: list[float] = []
    teardown: list[float] = []
    try:
        for i in range(count):
            t = time.perf_counter()
            made.append(await prov.prepare(config(uid, i, s, tmp)))
            setup.append(time.perf_counter() - t)
    finally:
        for c in made:
            t = time.perf_counter()
            await prov.release(c)
            teardown.append(time.perf_counter() - t)
    return setup, teardown


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--record", type=Path)
    args = ap.parse_args()
    uid = uuid.uuid4().hex[:6]
    tmp = Path(f"/run/lxcri-bench-{uid}")
    tmp.mkdir(parents=True)
    subprocess.run(["ip", "netns", "add", f"lxb-{uid}"], check=True)
    try:
        setup, teardown = asyncio.run(measure(args.count, tmp, uid))
    finally:
        subprocess.run(["ip", "netns", "del", f"lxb-{uid}"], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    first10, last10 = setup[1:11], setup[-10:]
    body = "\n".join([
        f"Shim-managed network setup, {args.count} containers one after another on one pool "
        "(bridge, lease, namespace, veth, address, route, DNS files):",
        "",
        "| measure | value |",
        "|---|---|",
        f"| first container (pyroute2 import, bridge creation) | {ms(setup[0])} |",
        f"| setup, median of all | {ms(median(setup))} |",
        f"| setup, p95 | {ms(percentile(setup, 95))} |",
        f"| setup, median of containers 2-11 | {ms(median(first10))} |",
        f"| setup, median of the last 10 | {ms(median(last10))} |",
        f"| growth (last 10 / containers 2-11) | {median(last10) / median(first10):.2f}x |",
        f"| tear-down, median | {ms(median(teardown))} |",
        f"| total setup for {args.count} | {sum(setup):.2f} s |",
    ])
    print(body)
    if args.record:
        record(args.record, "Network setup per container", body)


if __name__ == "__main__":
    main()
