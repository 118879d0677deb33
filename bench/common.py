"""Shared by the benchmarks: a private containerd with the busybox image, statistics, records."""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import integration_skip_reason
from tests.harness.image import DEFAULT_REF, build_busybox_image

RUNC = "io.containerd.runc.v2"
OURS = "io.containerd.proxmox.v2"
REF = DEFAULT_REF


@contextmanager
def bench_containerd(*, tmpfs_root: bool = False) -> Iterator[PrivateContainerd]:
    """A started private containerd with the busybox image; always cleaned up afterwards.
    ``tmpfs_root``: our runtime's state root on a tmpfs of its own, as under ``/run`` on
    Proxmox VE (the test VMs' ``/run`` and ``/tmp`` are on disk)."""
    reason = integration_skip_reason()
    if reason:
        raise SystemExit(f"benchmark cannot run here: {reason}")
    ctd = PrivateContainerd()
    try:
        if tmpfs_root:
            ctd.lxcri_root.mkdir(parents=True, exist_ok=True)
            # The harness's clean-up unmounts everything below its folder, this too.
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0711", "lxcri-bench",
                            str(ctd.lxcri_root)], check=True)
        ctd.start()
        with tempfile.TemporaryDirectory(prefix="lxcri-bench-") as tmp:
            ctd.import_image(build_busybox_image(Path(tmp) / "busybox.tar", REF))
        yield ctd
    finally:
        ctd.cleanup()


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{platform.node()}, kernel {platform.release()}, {os.cpu_count()} vCPU ({cpu}), "
            f"Python {platform.python_version()}")


def record(path: Path, title: str, body: str) -> None:
    """Append a dated Markdown section to ``path``."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"\n## {title} ({now})\n\nMachine: {machine()}\n\n{body.rstrip()}\n")
    print(f"recorded in {path}")
