"""cgroup figures as containerd's Metrics messages (shim-protocol.md section 5).

v1/hybrid hosts get ``io.containerd.cgroups.v1.Metrics``, pure cgroup v2 hosts (Proxmox VE 8
and 9) ``io.containerd.cgroups.v2.Metrics``: containerd's CRI accepts only these two type URLs,
verbatim, and fails the whole ListContainerStats call on any other (§5).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from google.protobuf import any_pb2
from google.protobuf.message import Message

from protos.cgroups.v1 import metrics_pb2 as v1
from protos.cgroups.v2 import metrics_pb2 as v2
from runtime.cgroups import Stats

V1_URL = "io.containerd.cgroups.v1.Metrics"
V2_URL = "io.containerd.cgroups.v2.Metrics"

_V1_MEMORY_STAT = [f.name for f in v1.MemoryStat.DESCRIPTOR.fields
                   if f.type == f.TYPE_UINT64]
_V2_MEMORY_STAT = [f.name for f in v2.MemoryStat.DESCRIPTOR.fields
                   if f.type == f.TYPE_UINT64 and f.name not in
                   ("usage", "usage_limit", "swap_usage", "swap_limit", "max_usage",
                    "swap_max_usage")]


M = TypeVar("M", bound=Message)


def _fill(msg: M, values: Mapping[str, int], names: Iterable[str]) -> M:
    for name in names:
        if name in values:
            setattr(msg, name, values[name])
    return msg


def encode(stats: Stats) -> any_pb2.Any:
    msg = to_v2(stats) if stats.v2 else to_v1(stats)
    return any_pb2.Any(type_url=V2_URL if stats.v2 else V1_URL, value=msg.SerializeToString())


def to_v1(s: Stats) -> v1.Metrics:
    # memory.stat keys are the field names (cache, rss, total_rss, pgfault → pg_fault …).
    stat = {k.replace("pgpg", "pg_pg_").replace("pgfault", "pg_fault")
            .replace("pgmajfault", "pg_maj_fault"): v for k, v in s.memory_stat.items()}
    mem = _fill(v1.MemoryStat(), stat, _V1_MEMORY_STAT)
    for entry in ("usage", "swap", "kernel", "kernel_tcp"):
        e = s.memory.get(entry)
        if e:
            _fill(getattr(mem, entry), e, ("limit", "usage", "max", "failcnt"))
    return v1.Metrics(
        network=[_fill(v1.NetworkStat(name=name), values, values) for name, values in
                 sorted(s.network.items())],
        pids=v1.PidsStat(current=s.pids_current, limit=s.pids_limit),
        cpu=v1.CPUStat(
            usage=v1.CPUUsage(total=s.cpu.get("total", 0), kernel=s.cpu.get("kernel", 0),
                              user=s.cpu.get("user", 0), per_cpu=list(s.per_cpu)),
            throttling=v1.Throttle(periods=s.throttling.get("nr_periods", 0),
                                   throttled_periods=s.throttling.get("nr_throttled", 0),
                                   throttled_time=s.throttling.get("throttled_time", 0))),
        memory=mem,
        memory_oom_control=v1.MemoryOomControl(
            oom_kill_disable=s.memory_events.get("oom_kill_disable", 0),
            under_oom=s.memory_events.get("under_oom", 0),
            oom_kill=s.memory_events.get("oom_kill", 0)),
    )


def to_v2(s: Stats) -> v2.Metrics:
    m = s.memory.get("v2", {})
    mem = _fill(v2.MemoryStat(), s.memory_stat, _V2_MEMORY_STAT)
    _fill(mem, m, ("usage", "usage_limit", "swap_usage", "swap_limit", "max_usage"))
    cpu_fields = ("usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled",
                  "throttled_usec", "nr_bursts", "burst_usec")
    ev = s.memory_events
    return v2.Metrics(
        network=[_fill(v2.NetworkStat(name=name), values, values) for name, values in
                 sorted(s.network.items())],
        pids=v2.PidsStat(current=s.pids_current, limit=s.pids_limit),
        cpu=_fill(v2.CPUStat(), s.cpu, cpu_fields),
        memory=mem,
        memory_events=v2.MemoryEvents(low=ev.get("low", 0), high=ev.get("high", 0),
                                      max=ev.get("max", 0), oom=ev.get("oom", 0),
                                      oom_kill=ev.get("oom_kill", 0),
                                      oom_group_kill=ev.get("oom_group_kill", 0)),
    )
