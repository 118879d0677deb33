"""Locating a process's cgroups and reading their figures, on v1/hybrid and pure v2 trees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runtime.cgroups import (
    Cgroups,
    cgroup_mounts,
    check_resources,
    parse_proc_cgroup,
    read_stats,
    update_writes,
)
from runtime.errdefs import InvalidArgument, NotImplementedErr

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


def _writes(cg: Cgroups, res: dict[str, object]) -> list[tuple[str, str]]:
    writes, _notes = update_writes(cg, check_resources(res))
    return [(w.path.name, w.value) for w in writes]


def test_update_writes_for_each_layout(tmp_path: Path) -> None:
    res = {"memory": {"limit": 1048576}, "pids": {"limit": 8},
           "cpu": {"shares": 512, "quota": 50000, "period": 100000}}
    v1 = Cgroups({"memory": tmp_path / "m", "pids": tmp_path / "p", "cpu": tmp_path / "c"})
    assert set(_writes(v1, res)) == {
        ("memory.limit_in_bytes", "1048576"), ("pids.max", "8"), ("cpu.shares", "512"),
        ("cpu.cfs_quota_us", "50000"), ("cpu.cfs_period_us", "100000")}
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    got2 = _writes(Cgroups({}, tmp_path), res)
    assert ("memory.max", "1048576") in got2 and ("pids.max", "8") in got2
    assert ("cpu.max", "50000 100000") in got2
    assert ("cpu.weight", str(1 + (510 * 9999) // 262142)) in got2


# What containerd 1.6's CRI plugin sends for UpdateContainerResources (the whole
# LinuxResources of the container, the deny-all device rule included).
CRI_UPDATE = {"devices": [{"allow": False, "access": "rwm"}],
              "memory": {"limit": 67108864, "swap": 67108864},
              "cpu": {"shares": 256, "quota": 20000, "period": 100000, "cpus": "0", "mems": ""},
              "pids": None, "hugepageLimits": [], "unified": {}}


def test_update_accepts_cri_resources_and_leaves_devices_alone(tmp_path: Path) -> None:
    m = tmp_path / "memory"
    m.mkdir()
    (m / "memory.limit_in_bytes").write_text("33554432\n")
    (m / "memory.memsw.limit_in_bytes").write_text("33554432\n")
    cg = Cgroups({"memory": m, "cpu": tmp_path / "c", "cpuset": tmp_path / "s",
                  "devices": tmp_path / "d"})
    writes, notes = update_writes(cg, check_resources(CRI_UPDATE))
    names = [w.path.name for w in writes]
    # Raising both: memsw first, or the kernel refuses memory.limit > memsw.limit.
    assert names.index("memory.memsw.limit_in_bytes") < names.index("memory.limit_in_bytes")
    assert ("cpuset.cpus", "0") in [(w.path.name, w.value) for w in writes]
    assert not any(w.path.parent.name == "d" for w in writes)
    assert any("devices" in n for n in notes)


def test_update_lowering_memory_writes_the_limit_first(tmp_path: Path) -> None:
    m = tmp_path / "memory"
    m.mkdir()
    (m / "memory.limit_in_bytes").write_text("67108864\n")
    (m / "memory.memsw.limit_in_bytes").write_text("67108864\n")
    got = _writes(Cgroups({"memory": m}), {"memory": {"limit": 33554432, "swap": 33554432}})
    assert got == [("memory.limit_in_bytes", "33554432"),
                   ("memory.memsw.limit_in_bytes", "33554432")]


def test_update_v2_swap_is_swap_alone(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory\n")
    got = _writes(Cgroups({}, tmp_path), {"memory": {"limit": 100, "swap": 150}})
    assert got == [("memory.max", "100"), ("memory.swap.max", "50")]


@pytest.mark.parametrize("res, message", [
    ({"devices": {"allow": False}}, "resources.devices: must be a list"),
    ({"memory": {"limit": "1G"}}, "resources.memory.limit: must be an integer"),
    ({"cpu": {"cpus": "0;rm"}}, "resources.cpu.cpus"),
    ({"unified": {"../x": "1"}}, "resources.unified.../x"),
    ({"unified": {"cgroup.procs": "1"}}, "resources.unified.cgroup.procs"),
    ({"hugepageLimits": [{"pageSize": "2MB/../x", "limit": 1}]}, "hugepageLimits[0]"),
    ({"bogus": {}}, "resources.bogus: unknown field"),
])
def test_update_refuses_bad_resources(res: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        check_resources(res)


def test_unified_needs_a_v2_host(tmp_path: Path) -> None:
    with pytest.raises(NotImplementedErr):
        update_writes(Cgroups({"memory": tmp_path}, tmp_path), {"unified": {"memory.high": "1"}})


def test_unified_values_are_written_line_by_line(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("io memory\n")
    got = _writes(Cgroups({}, tmp_path), {"unified": {"io.max": "8:0 rbps=1\n8:16 wbps=2\n"}})
    assert got == [("io.max", "8:0 rbps=1"), ("io.max", "8:16 wbps=2")]
