"""runtime.systemd_scope: the busctl argv of the transient scope, and the checks before it.

Pure logic; the real registration under systemd 257 is tested in the pve9 guest
(tests/kernel/test_pve9_systemd_cgroups.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from runtime import errdefs, systemd_scope
from runtime.reaper import Completed
from runtime.systemd_scope import Scope


def test_scope_only_for_systemd_form() -> None:
    assert systemd_scope.scope_for(None) is None
    assert systemd_scope.scope_for("/kubepods/pod1/c1") is None
    assert systemd_scope.scope_for("relative/path") is None
    assert systemd_scope.scope_for("system.slice:lxcri:c1") == Scope("lxcri-c1.scope",
                                                                     "system.slice")
    assert systemd_scope.scope_for("::c1") == Scope("-c1.scope", "system.slice")
    assert systemd_scope.scope_for("a-b.slice:cri-containerd:c1") == Scope(
        "cri-containerd-c1.scope", "a-b.slice")
    # A name that is a slice is a slice unit in runc; not registered here.
    assert systemd_scope.scope_for("a.slice:p:b.slice") is None


@pytest.mark.parametrize("value", [
    "system.slice:lxcri:c1 --help", "system.slice:x;rm -rf /:c1", "system.slice:p:c/1",
    "sys$tem.slice:p:c1", "system.slice:p:", "a--b.slice:p:c1",
])
def test_hostile_values_refused(value: str) -> None:
    with pytest.raises(errdefs.InvalidArgument):
        systemd_scope.scope_for(value)


def test_start_argv_is_runc_equal_and_one_item_per_value() -> None:
    argv = systemd_scope.start_argv(Scope("-c1.scope", "system.slice"), 4242, {
        "memory": {"limit": 50331648, "reservation": 1048576, "swap": 67108864},
        "cpu": {"shares": 512, "quota": 12345, "period": 100000},
        "pids": {"limit": 64},
    })
    # "--" before the verb: the unit name starts with "-" and must not be read as an option.
    assert argv[:5] == ["busctl", "--system", "--quiet", "--timeout=30", "--"]
    assert argv[5:13] == ["call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                          "org.freedesktop.systemd1.Manager", "StartTransientUnit",
                          "ssa(sv)a(sa(sv))", "-c1.scope", "replace"]
    assert argv[-1] == "0"
    count, rest = int(argv[13]), argv[14:-1]
    props: dict[str, list[str]] = {}
    while rest:  # (name, signature, value...) with "au" as a length and the items
        name, sig = rest[0], rest[1]
        n = 1 + int(rest[2]) if sig == "au" else 1
        props[name], rest = [sig, *rest[2:2 + n]], rest[2 + n:]
    assert len(props) == count
    assert props == {
        "Description": ["s", "lxcri container -c1.scope"],
        "Slice": ["s", "system.slice"],
        "PIDs": ["au", "1", "4242"],
        "Delegate": ["b", "true"],
        "MemoryAccounting": ["b", "true"], "CPUAccounting": ["b", "true"],
        "IOAccounting": ["b", "true"], "TasksAccounting": ["b", "true"],
        "DefaultDependencies": ["b", "false"],
        "MemoryMax": ["t", "50331648"],
        "MemoryLow": ["t", "1048576"],
        "MemorySwapMax": ["t", str(67108864 - 50331648)],
        # runc's conversion of 512 shares, as runtime.lxc.resources writes cpu.weight.
        "CPUWeight": ["t", "20"],
        "CPUQuotaPeriodUSec": ["t", "100000"],
        # 12345 µs per 100 ms is 123450 µs/s, rounded up to systemd's 10 ms steps.
        "CPUQuotaPerSecUSec": ["t", "130000"],
        "TasksMax": ["t", "64"],
    }


def test_unlimited_values_are_uint64_max() -> None:
    props = systemd_scope.properties({"memory": {"limit": -1, "swap": -1},
                                      "cpu": {"quota": -1}, "pids": {"limit": -1}})
    top = str(2**64 - 1)
    assert props == [("MemoryMax", "t", top), ("MemorySwapMax", "t", top),
                     ("CPUQuotaPerSecUSec", "t", top), ("TasksMax", "t", top)]
    assert systemd_scope.properties(None) == []
    assert systemd_scope.properties({"memory": {"limit": True}, "pids": {"limit": 0}}) == []


def test_stop_argv() -> None:
    assert systemd_scope.stop_argv("-c1.scope")[5:] == [
        "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager", "StopUnit", "ss", "-c1.scope", "replace"]


def test_set_argv_for_update() -> None:
    argv = systemd_scope.set_argv("p-c1.scope", {"memory": {"limit": 1 << 26},
                                                 "devices": [{"allow": False, "access": "rwm"}]})
    assert argv is not None and argv[5:] == [
        "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager", "SetUnitProperties", "sba(sv)", "p-c1.scope",
        "true", "1", "MemoryMax", "t", str(1 << 26)]
    # CRI's update with nothing systemd keeps: no call.
    assert systemd_scope.set_argv("p-c1.scope", {"cpu": {"shares": 0}}) is None


def test_booted(tmp_path: Path) -> None:
    assert not systemd_scope.booted(str(tmp_path / "missing"))
    (tmp_path / "system").mkdir()
    assert systemd_scope.booted(str(tmp_path / "system"))


class FakeBus:
    """Answers busctl and systemctl as systemd would; records the argv."""

    def __init__(self, start_rc: int = 0, state: str = "active",
                 cgroup: str = "/system.slice/p-c1.scope") -> None:
        self.calls: list[list[str]] = []
        self.start_rc, self.state, self.cgroup = start_rc, state, cgroup

    async def run(self, argv: Sequence[str]) -> Completed:
        self.calls.append(list(argv))
        if argv[0] == "systemctl":
            out = f"LoadState=loaded\nActiveState={self.state}\nControlGroup={self.cgroup}\n"
            return Completed(tuple(argv), 0, out.encode(), b"")
        if "StartTransientUnit" in argv and self.start_rc:
            return Completed(tuple(argv), 1, b"", b"Call failed: Unit p-c1.scope exists.")
        return Completed(tuple(argv), 0, b"", b"")


def test_register_waits_for_active() -> None:
    bus = FakeBus()
    asyncio.run(systemd_scope.register(bus.run, Scope("p-c1.scope", "system.slice"), 7, None,
                                       "system.slice/p-c1.scope"))
    assert [c[0] for c in bus.calls] == ["busctl", "systemctl"]


@pytest.mark.parametrize("bus", [FakeBus(state="failed"), FakeBus(cgroup="/system.slice")])
def test_register_failure_names_the_unit_and_stops_it(bus: FakeBus) -> None:
    with pytest.raises(errdefs.FailedPrecondition, match=r"systemd scope p-c1\.scope"):
        asyncio.run(systemd_scope.register(bus.run, Scope("p-c1.scope", "system.slice"), 7,
                                           None, "system.slice/p-c1.scope", attempts=3))
    assert "StopUnit" in bus.calls[-1]


def test_refused_start_leaves_the_existing_unit_alone() -> None:
    bus = FakeBus(start_rc=1)
    with pytest.raises(errdefs.FailedPrecondition, match=r"p-c1\.scope.*exists"):
        asyncio.run(systemd_scope.register(bus.run, Scope("p-c1.scope", "system.slice"), 7,
                                           None, "system.slice/p-c1.scope"))
    assert len(bus.calls) == 1  # no StopUnit of a unit that is someone else's
