"""The node's runtime metrics in Prometheus' text format (``proxmox-lxcri metrics``).

A node runs one shim per pod, each its own process, so no shim can answer for the node. The
figures are therefore computed when asked, from what the shims already leave behind: the
lifecycle event log (runtime/oplog.py: one line per operation, with its duration and outcome),
the task records in the state root, /proc for the shims' memory, and the ZFS pool. The shims
pay nothing extra for metrics; the endpoint is opt-in (``proxmox-lxcri metrics --listen``,
loopback only) and costs only while it is scraped. The exposition format is
prometheus_client's.

Counters come from the event log, which is bounded (two files of about 2 MiB): they restart
from a lower value when an old file is dropped, which Prometheus' ``rate()`` treats as a
counter reset.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from runtime import oplog

#: Seconds. Lifecycle operations range from milliseconds (state) to minutes (CRIU restore).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: Storage events that are ZFS steps (storage/service.py): a clone per container, a snapshot
#: per checkpoint, a rollback per restore.
ZFS_STEPS = {"dataset_create": "clone", "checkpoint": "snapshot", "restore": "rollback",
             "dataset_destroy": "destroy"}


def _histogram(name: str, doc: str, labels: list[str],
               samples: dict[tuple[str, ...], list[float]]) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=labels)
    for key, values in sorted(samples.items()):
        counts = [sum(1 for v in values if v <= b) for b in BUCKETS]
        buckets = [(repr(b), c) for b, c in zip(BUCKETS, counts, strict=True)]
        buckets.append(("+Inf", len(values)))
        fam.add_metric(list(key), buckets, sum(values))
    return fam


def _rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class NodeCollector(Collector):
    """Builds every family at collection time (see the module docstring)."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        self.root = root
        self.config = config

    def collect(self) -> Iterator[Metric]:
        yield from self._from_events(oplog.read(oplog.path_under(self.root)))
        yield from self._tasks()
        yield from self._datasets()

    # -- the event log -------------------------------------------------------------------------
    def _from_events(self, events: Iterable[dict[str, Any]]) -> Iterator[Metric]:
        ops: dict[tuple[str, ...], list[float]] = defaultdict(list)
        outcomes: dict[tuple[str, ...], int] = defaultdict(int)
        api: dict[tuple[str, ...], list[float]] = defaultdict(list)
        zfs: dict[tuple[str, ...], list[float]] = defaultdict(list)
        checkpoints = {"ok": 0, "failed": 0}
        for e in events:
            source, event = str(e.get("source", "?")), str(e.get("event", "?"))
            if event == "usage" or (source == "storage" and event == "pool"):
                continue  # readings, not operations
            ok = bool(e.get("ok", True))
            outcomes[(source, event, "ok" if ok else "error")] += 1
            seconds = e.get("seconds")
            timed = isinstance(seconds, int | float)
            if timed:
                ops[(source, event)].append(float(seconds))  # type: ignore[arg-type]
            if source == "proxmox" and event == "api" and timed:
                api[(str(e.get("method", "?")), str(e.get("endpoint", "?")))].append(
                    float(seconds))  # type: ignore[arg-type]
            if source == "storage":
                if event == "checkpoint":
                    checkpoints["ok" if ok else "failed"] += 1
                if event in ZFS_STEPS and ok and timed:
                    zfs[(ZFS_STEPS[event],)].append(float(seconds))  # type: ignore[arg-type]
        yield _histogram("lxcri_operation_duration_seconds",
                         "Duration of runtime operations (task RPCs, storage and backend steps)",
                         ["source", "operation"], ops)
        total = CounterMetricFamily("lxcri_operations", "Runtime operations by outcome",
                                    labels=["source", "operation", "outcome"])
        errors = CounterMetricFamily("lxcri_operation_errors", "Failed runtime operations",
                                     labels=["source", "operation"])
        for (source, event, outcome), n in sorted(outcomes.items()):
            total.add_metric([source, event, outcome], n)
            if outcome == "error":
                errors.add_metric([source, event], n)
        yield total
        yield errors
        yield _histogram("lxcri_proxmox_api_duration_seconds",
                         "Response time of Proxmox API calls", ["method", "endpoint"], api)
        yield _histogram("lxcri_zfs_duration_seconds",
                         "Duration of ZFS steps: clone, snapshot, rollback, destroy",
                         ["step"], zfs)
        done = checkpoints["ok"] + checkpoints["failed"]
        rate = GaugeMetricFamily("lxcri_checkpoint_success_ratio",
                                 "Successful checkpoints / all checkpoints in the event log "
                                 "(absent before the first)")
        if done:
            rate.add_metric([], checkpoints["ok"] / done)
        yield rate

    # -- the task records and /proc ------------------------------------------------------------
    def _tasks(self) -> Iterator[Metric]:
        from runtime.store import Store
        from shim.operator_cli import alive as _alive

        states: dict[str, int] = defaultdict(int)
        shims: set[int] = set()
        for _ns, _id, st in Store(self.root).list():
            status = str(st.get("status", "unknown"))
            pid = int(st.get("pid") or 0)
            if status in ("running", "created") and not _alive(pid):
                status = "lost"
            states[status] += 1
            shim = int(st.get("shim_pid") or 0)
            if _alive(shim):
                shims.add(shim)
        by_state = GaugeMetricFamily("lxcri_containers", "Containers by state",
                                     labels=["state"])
        for s in ("created", "running", "paused", "stopped", "lost"):
            states.setdefault(s, 0)
        for s, n in sorted(states.items()):
            by_state.add_metric([s], n)
        yield by_state
        yield GaugeMetricFamily("lxcri_shims", "Shim daemons serving tasks", value=len(shims))
        rss = [r for r in (_rss_bytes(p) for p in shims) if r is not None]
        yield GaugeMetricFamily("lxcri_shims_rss_bytes", "Resident memory of all shim daemons",
                                value=sum(rss))

    # -- ZFS datasets --------------------------------------------------------------------------
    def _datasets(self) -> Iterator[Metric]:
        used = GaugeMetricFamily("lxcri_zfs_dataset_used_bytes",
                                 "Space used by each container dataset", labels=["dataset"])
        pool = (self.config.get("storage") or {}).get("zfs_pool")
        if pool:
            try:
                # `zfs get -p`, not `zfs list -p`: zfs-fuse lacks the latter (environment.md 3).
                r = subprocess.run(["zfs", "get", "-H", "-p", "-r", "-o", "name,value", "used",
                                    f"{pool}/containers"], capture_output=True, text=True,
                                   timeout=10, check=False)
            except (OSError, subprocess.TimeoutExpired):
                r = None
            for line in (r.stdout.splitlines() if r and r.returncode == 0 else []):
                name, _, value = line.partition("\t")
                if name != f"{pool}/containers" and "@" not in name \
                        and value.strip().isdigit():
                    used.add_metric([name], int(value))
        yield used


def exposition(root: Path, config: dict[str, Any]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(root, config))
    return generate_latest(registry)


def check_loopback(host: str) -> None:
    """The endpoint is loopback-only: anything else is refused with the reason."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if host != "localhost":
            raise ValueError(f"metrics endpoint: {host!r} is not an IP address; the "
                             f"endpoint listens on loopback only (127.0.0.1 or ::1)") from None
        return
    if not ip.is_loopback:
        raise ValueError(f"metrics endpoint: {host} is not a loopback address; the endpoint "
                         f"listens on loopback only (127.0.0.1 or ::1)")
