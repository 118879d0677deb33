"""cgroup figures become containerd's v1 or v2 Metrics with the exact type URLs CRI expects."""

from __future__ import annotations

from protos.cgroups.v1 import metrics_pb2 as v1
from protos.cgroups.v2 import metrics_pb2 as v2
from runtime.cgroups import Stats
from shim.metrics import encode

NET = {"eth0": {"rx_bytes": 100, "rx_packets": 2, "rx_errors": 0, "rx_dropped": 0,
                "tx_bytes": 50, "tx_packets": 1, "tx_errors": 0, "tx_dropped": 0}}


def test_v1_encoding() -> None:
    s = Stats(v2=False, pids_current=3, pids_limit=64,
              cpu={"total": 5000, "user": 3000, "kernel": 2000}, per_cpu=(4000, 1000),
              throttling={"nr_periods": 7, "nr_throttled": 1, "throttled_time": 9},
              memory_stat={"cache": 11, "rss": 22, "total_rss": 33, "total_inactive_file": 4,
                           "pgfault": 5, "pgmajfault": 6, "pgpgin": 7},
              memory={"usage": {"usage": 1000, "limit": 2000, "max": 1500, "failcnt": 1}},
              memory_events={"oom_kill": 2, "under_oom": 0}, network=NET)
    a = encode(s)
    assert a.type_url == "io.containerd.cgroups.v1.Metrics"
    m = v1.Metrics.FromString(a.value)
    assert (m.pids.current, m.pids.limit) == (3, 64)
    assert (m.cpu.usage.total, m.cpu.usage.user, list(m.cpu.usage.per_cpu)) == (5000, 3000,
                                                                                [4000, 1000])
    assert m.cpu.throttling.throttled_periods == 1
    assert (m.memory.cache, m.memory.total_rss, m.memory.pg_fault, m.memory.pg_maj_fault,
            m.memory.pg_pg_in) == (11, 33, 5, 6, 7)
    assert (m.memory.usage.usage, m.memory.usage.limit) == (1000, 2000)
    assert m.memory_oom_control.oom_kill == 2
    assert [(n.name, n.rx_bytes, n.tx_packets) for n in m.network] == [("eth0", 100, 1)]


def test_v2_encoding() -> None:
    s = Stats(v2=True, pids_current=2, pids_limit=10,
              cpu={"usage_usec": 77, "user_usec": 50, "system_usec": 27, "nr_throttled": 3},
              memory_stat={"anon": 10, "file": 20, "inactive_file": 5, "pgfault": 8},
              memory={"v2": {"usage": 4096, "usage_limit": 8192, "swap_usage": 0,
                             "swap_limit": 0, "max_usage": 5000}},
              memory_events={"oom": 1, "oom_kill": 1}, network=NET)
    a = encode(s)
    assert a.type_url == "io.containerd.cgroups.v2.Metrics"
    m = v2.Metrics.FromString(a.value)
    assert (m.cpu.usage_usec, m.cpu.nr_throttled) == (77, 3)
    assert (m.memory.usage, m.memory.usage_limit, m.memory.anon, m.memory.inactive_file,
            m.memory.pgfault, m.memory.max_usage) == (4096, 8192, 10, 5, 8, 5000)
    assert (m.memory_events.oom, m.memory_events.oom_kill) == (1, 1)
    assert m.network[0].name == "eth0" and m.network[0].tx_bytes == 50
