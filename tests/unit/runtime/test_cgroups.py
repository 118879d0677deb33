"""Locating a process's cgroups and reading their figures, on v1/hybrid and pure v2 trees."""

from __future__ import annotations

from pathlib import Path

from runtime.cgroups import (
    Cgroups,
    cgroup_mounts,
    parse_proc_cgroup,
    read_stats,
    resource_writes,
)

MOUNTINFO_HYBRID = """\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
MOUNTINFO_V2 = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def test_hybrid_layout() -> None:
    v1, v2 = cgroup_mounts(MOUNTINFO_HYBRID)
    assert v1["memory"] == Path("/sys/fs/cgroup/memory") and v2 == Path("/sys/fs/cgroup/unified")
    cg = parse_proc_cgroup("4:memory:/lxc.payload.x\n1:cpu:/lxc.payload.x\n0::/lxc.payload.x\n",
                           v1, v2)
    assert cg.v1["memory"] == Path("/sys/fs/cgroup/memory/lxc.payload.x")
    assert not cg.is_v2_only


def test_pure_v2_layout() -> None:
    v1, v2 = cgroup_mounts(MOUNTINFO_V2)
    cg = parse_proc_cgroup("0::/lxc.payload.x\n", v1, v2)
    assert cg.is_v2_only and cg.v2 == Path("/sys/fs/cgroup/lxc.payload.x")


def test_v2_stats_from_files(tmp_path: Path) -> None:
    (tmp_path / "cpu.stat").write_text("usage_usec 1200\nuser_usec 800\nsystem_usec 400\n")
    (tmp_path / "memory.current").write_text("4096\n")
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.stat").write_text("anon 100\nfile 200\ninactive_file 50\n")
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (tmp_path / "pids.current").write_text("5\n")
    (tmp_path / "pids.max").write_text("100\n")
    s = read_stats(Cgroups({}, tmp_path))
    assert s.v2 and s.cpu["usage_usec"] == 1200 and s.pids_current == 5 and s.pids_limit == 100
    assert s.memory["v2"]["usage"] == 4096 and s.memory["v2"]["usage_limit"] == 0
    assert s.memory_events["oom_kill"] == 1 and s.memory_stat["inactive_file"] == 50


def test_resource_writes_for_each_layout(tmp_path: Path) -> None:
    res = {"memory": {"limit": 1048576}, "pids": {"limit": 8},
           "cpu": {"shares": 512, "quota": 50000, "period": 100000}}
    v1 = Cgroups({"memory": tmp_path / "m", "pids": tmp_path / "p", "cpu": tmp_path / "c"})
    got = {(p.name, v) for p, v, _ in resource_writes(v1, res)}
    assert got == {("memory.limit_in_bytes", "1048576"), ("pids.max", "8"),
                   ("cpu.shares", "512"), ("cpu.cfs_quota_us", "50000"),
                   ("cpu.cfs_period_us", "100000")}
    v2 = Cgroups({}, tmp_path)
    got2 = {(p.name, v) for p, v, _ in resource_writes(v2, res)}
    assert ("memory.max", "1048576") in got2 and ("pids.max", "8") in got2
    assert ("cpu.max", "50000 100000") in got2
    assert ("cpu.weight", str(1 + (510 * 9999) // 262142)) in got2
