"""What the in-container init costs: a container run by ``lxc-start`` with lxcri-init (the
mode CRIU-checkpointable containers use, runtime/lxc/owninit.py) against the default
``lxc-execute`` with LXC's in-process init, through the LXC backend itself.

Measured per container, alternating the two modes: create (up to the start-host gate), and
create → start → exit of ``true``. Also the per-container files the mode adds (a copy of the
static init on the state directory's tmpfs).

    .venv/bin/python -m bench.own_init [-n 15] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import median, percentile, record
from runtime.lxc import owninit
from runtime.lxc.backend import LxcBackend
from runtime.lxc.mount import mounted_under, unmount
from runtime.reaper import Reaper
from runtime.types import CreateConfig, Mount
from tests.harness.rootfs import populate_busybox_rootfs

ROOT = Path(__file__).resolve().parents[1]


async def one(backend: LxcBackend, base: Path, rootfs: Path, own: bool) -> tuple[float, float]:
    cid = f"b{uuid.uuid4().hex[:8]}"
    bundle = base / cid
    bundle.mkdir()
    spec = {"ociVersion": "1.0.2",
            "process": {"args": ["true"], "env": ["PATH=/bin"], "cwd": "/",
                        "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount",
                                                            "network")]}}
    config = CreateConfig(id=cid, namespace="bench", bundle=bundle, spec=spec,
                          rootfs=(Mount("bind", str(rootfs), "", ("rbind", "rw")),),
                          state_dir=base / f"{cid}-state", checkpointable=own)
    started = time.perf_counter()
    handle = await backend.create(config)
    created = time.perf_counter() - started
    await handle.start()
    status = await handle.wait()
    total = time.perf_counter() - started
    await handle.delete()
    if status != 0:
        raise SystemExit(f"container exited with {status}")
    return created, total


async def run(n: int) -> str:
    reaper = Reaper()
    reaper.install(asyncio.get_running_loop(), subreaper=False)
    base = Path(tempfile.mkdtemp(prefix="lxcri-bench-init-"))
    rootfs = base / "busybox"
    populate_busybox_rootfs(rootfs)
    backend = LxcBackend(reaper, base / "lxc")
    samples: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    try:
        for own in (False, True):  # warm-up, not counted
            await one(backend, base, rootfs, own)
        for _ in range(n):
            for own in (False, True):
                samples[own].append(await one(backend, base, rootfs, own))
    finally:
        for point in reversed(mounted_under(base)):
            unmount(point)
        reaper.uninstall()
        shutil.rmtree(base, ignore_errors=True)

    def ms(values: list[float]) -> str:
        return f"{median(values) * 1000:.1f} ms (p90 {percentile(values, 90) * 1000:.1f})"

    rows = []
    for label, index in (("create (to the gate)", 0), ("create → start → exit `true`", 1)):
        plain = [s[index] for s in samples[False]]
        with_init = [s[index] for s in samples[True]]
        rows.append(f"| {label} | {ms(plain)} | {ms(with_init)} | "
                    f"{median(with_init) / median(plain):.2f}× |")
    size = owninit.BINARY.stat().st_size
    return "\n".join([
        f"In-container init vs LXC's in-process init, {n} containers each, alternating:",
        "",
        "| | lxc-execute (default) | lxc-start + lxcri-init (CRIU mode) | ratio |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Per container the CRIU mode adds a copy of the static init ({size / 1024:.0f} kB) "
        "on the state directory's tmpfs.",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=15, help="samples per mode")
    ap.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the spec's downgrade notes, once per container
    if not owninit.BINARY.is_file():
        raise SystemExit("benchmark cannot run here: lxcri-init is not built (make setup)")
    body = asyncio.run(run(args.n))
    print(body)
    if args.record:
        record(ROOT / "docs" / "benchmarks.md", "In-container init (CRIU mode) cost", body)


if __name__ == "__main__":
    main()
