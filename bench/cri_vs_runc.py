"""CRI latency as kubelet sees it: RunPodSandbox and CreateContainer+StartContainer, our
handler against runc's, through containerd's CRI plugin (interleaved rounds).

    python -m bench.cri_vs_runc [--runs 15] [--record docs/benchmarks.md]

The same private CRI containerd as ``tests/integration/test_cri.py`` (its own network
namespace, CNI bridge + host-local). Each round, per handler: one pod (timed RunPodSandbox),
one ``sleep`` container in it (timed CreateContainer + StartContainer), then the pod is
stopped and removed (not timed). The medians' ratios are the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import REF, median, percentile, record
from protos.cri.v1 import api_pb2 as cri
from tests.harness.containerd import packaged_handler
from tests.harness.cri import CriClient, cri_containerd
from tests.harness.fixtures import integration_skip_reason
from tests.harness.image import build_busybox_image

RUNC_HANDLER = "runc"


#: What kubelet asks for a v1 pod: one PID namespace per container (the CRI default is POD).
NAMESPACES = cri.NamespaceOption(network=cri.POD, pid=cri.CONTAINER, ipc=cri.POD)


def _round(client: CriClient, handler: str, parent: str, logs: Path) -> tuple[float, float]:
    uid = uuid.uuid4().hex[:12]
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=f"b-{uid[:6]}", uid=uid, namespace="bench"),
        hostname=f"b-{uid[:6]}", log_directory=str(logs / uid),
        linux=cri.LinuxPodSandboxConfig(
            cgroup_parent=f"/{parent}/pod{uid}",
            security_context=cri.LinuxSandboxSecurityContext(namespace_options=NAMESPACES)))
    t0 = time.perf_counter()
    pod = client.run_pod(config, handler)
    t1 = time.perf_counter()
    try:
        cid = client.create(pod, cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name="c"), image=cri.ImageSpec(image=REF),
            command=["sleep", "60"], log_path="c/0.log",
            linux=cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(
                namespace_options=NAMESPACES))), config)
        client.start(cid)
        t2 = time.perf_counter()
    finally:
        client.stop_pod(pod)
        client.remove_pod(pod)
    return (t1 - t0) * 1000, (t2 - t1) * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="CRI latency: our handler vs runc's")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--record", type=Path)
    args = ap.parse_args(argv)
    reason = integration_skip_reason()
    if reason:
        raise SystemExit(f"benchmark cannot run here: {reason}")
    ours, _ = packaged_handler()
    handlers = [ours, RUNC_HANDLER]
    pods: dict[str, list[float]] = {h: [] for h in handlers}
    starts: dict[str, list[float]] = {h: [] for h in handlers}
    parent = f"lxcri-bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="lxcri-bench-") as tmp:
        tar = build_busybox_image(Path(tmp) / "busybox.tar", REF)
        try:
            with cri_containerd(Path(tmp), tar) as (_ctd, client):
                for i in range(args.runs + 2):
                    for h in handlers:
                        pod_ms, start_ms = _round(client, h, parent, Path(tmp) / "logs")
                        if i >= 2:  # two warm-up rounds
                            pods[h].append(pod_ms)
                            starts[h].append(start_ms)
        finally:
            for hierarchy in Path("/sys/fs/cgroup").iterdir():
                top = hierarchy / parent
                for d in [*sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True), top]:
                    with contextlib.suppress(OSError):
                        d.rmdir()
    rows = ["| handler | runs | RunPodSandbox median ms (p90) | Create+Start median ms (p90) |",
            "|---|---|---|---|"]
    for h in handlers:
        label = ("ours: " if h != RUNC_HANDLER else "runc: ") + h
        rows.append(f"| {label} | {len(pods[h])} | {median(pods[h]):.1f} "
                    f"({percentile(pods[h], 90):.1f}) | {median(starts[h]):.1f} "
                    f"({percentile(starts[h], 90):.1f}) |")
    pod_ratio = median(pods[ours]) / median(pods[RUNC_HANDLER])
    start_ratio = median(starts[ours]) / median(starts[RUNC_HANDLER])
    body = "\n".join(rows) + (
        f"\n\nRatios ours/runc (medians): RunPodSandbox **{pod_ratio:.2f}**, "
        f"CreateContainer+StartContainer **{start_ratio:.2f}** (containerd 1.6 CRI plugin, "
        "CNI bridge + host-local, busybox `sleep` pause image, pods with a cgroup parent; "
        "interleaved, 2 warm-up rounds)\n")
    print(body)
    if args.record:
        record(args.record, "CRI: ours vs runc", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
