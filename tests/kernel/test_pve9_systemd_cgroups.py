"""cgroupsPath in systemd's ``slice:prefix:name`` form under a real systemd (issue 16, item 3;
issue 13's cgroupsPath), through containerd in the pve9 guest, for runc and for this runtime.

containerd's CRI plugin with ``SystemdCgroup = true`` (kubeadm's default) gives each container
the cgroupsPath ``<pod slice>:cri-containerd:<id>``; ``ctr run --cgroup`` sets the same field,
and ``--runc-systemd-cgroup`` sets runc's ``SystemdCgroup`` option, so one ``ctr`` call drives
either runtime the way the CRI plugin would, without a pod network.

What each test checks, for both runtimes: the program's ``/proc/<pid>/cgroup`` is the scope
``<prefix>-<name>.scope`` below the expanded slice path (systemd.slice(5): each dash a level),
the spec's memory limit is applied there, systemd knows the scope as a transient unit
(StartTransientUnit with ``Delegate=yes`` and the limits as unit properties: runc's systemd
driver, and this runtime's runtime/systemd_scope.py), and the delete leaves neither the unit nor
its directory, and nothing above it removed.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from runtime import cgroups_path
from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import PROXMOX_RUNTIME, RUNC_RUNTIME, BusyboxImage
from tests.harness.waiting import wait_for
from tests.kernel.helpers import sh
from tests.kernel.v2world import World, v2_world

# Only in the pve9 guest: the kernel flavour has no systemd.
pytestmark = pytest.mark.pve9(only=True)

ROOT = Path("/sys/fs/cgroup")
MEMORY = 48 * 1024 * 1024


@dataclass(frozen=True)
class Runtime:
    name: str
    flags: tuple[str, ...]


RUNTIMES = {
    "lxcri": Runtime("lxcri", ("--runtime", PROXMOX_RUNTIME)),
    # SystemdCgroup = true in runc's options, as containerd's CRI plugin sets it for kubeadm.
    "runc": Runtime("runc", ("--runtime", RUNC_RUNTIME, "--runc-systemd-cgroup")),
}


def unit_props(unit: str) -> dict[str, str]:
    out = sh("systemctl", "show", "-p",
             "LoadState,ActiveState,ControlGroup,Delegate,MemoryMax,CPUWeight,TasksMax",
             "--", unit).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def task_pid(ctd: PrivateContainerd, cid: str) -> int:
    for line in ctd.ctr("task", "ls").stdout.splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] == cid:
            return int(parts[1])
    raise AssertionError(f"no task {cid}")


def cgroup_of(pid: int) -> str:
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("0::"), lines
    return lines[0][3:]


@contextlib.contextmanager
def running(ctd: PrivateContainerd, image: BusyboxImage, rt: Runtime, cid: str,
            cgroups_path: str, *flags: str) -> Iterator[int]:
    """A detached ``sleep`` with that cgroupsPath and a memory limit; its host PID. Removed
    afterwards even on failure."""
    try:
        ctd.ctr("run", "-d", *rt.flags, "--cgroup", cgroups_path,
                "--memory-limit", str(MEMORY), *flags, image.ref, cid, "sleep", "300", timeout=120)
        wait_for(lambda: ctd.task_status(cid) == "RUNNING", what=f"{cid} RUNNING", timeout=60)
        yield task_pid(ctd, cid)
    finally:
        ctd.remove_container(cid)


def remove_slices(top: str, *slices: str) -> None:
    """The slice cgroups a test made, deepest first: as systemd units where runc's driver had
    systemd create them, else as plain directories (this runtime's parents stay by design)."""
    for s in reversed(slices):
        if unit_props(s).get("LoadState") == "loaded":
            sh("systemctl", "stop", s, check=False)
    for d in sorted((p for p in (ROOT / top).rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        (ROOT / top).rmdir()


def check_scope(rt: Runtime, pid: int, expected: str) -> Path:
    """The program sits in ``expected``, the memory limit is set there, and systemd knows the
    unit, delegated, with the limit as its property."""
    scope = ROOT / expected.lstrip("/")
    props = unit_props(scope.name)
    assert cgroup_of(pid) == expected, props
    assert (scope / "memory.max").read_text().strip() == str(MEMORY)
    assert props["LoadState"] == "loaded" and props["ActiveState"] == "active", (rt, props)
    assert props["ControlGroup"] == expected, props
    assert props["Delegate"] == "yes" and props["MemoryMax"] == str(MEMORY), props
    return scope


def gone(scope: Path) -> None:
    """The delete left no unit and no directory (a stopped transient unit is unloaded)."""
    wait_for(lambda: not scope.exists(), what=f"{scope} to go", timeout=30)
    wait_for(lambda: unit_props(scope.name)["LoadState"] == "not-found",
             what=f"{scope.name} unloaded", timeout=30)
    assert unit_props(scope.name)["ActiveState"] == "inactive"


@pytest.mark.parametrize("rt", list(RUNTIMES.values()), ids=list(RUNTIMES))
def test_system_slice_scope(containerd: PrivateContainerd, busybox_image: BusyboxImage,
                            rt: Runtime) -> None:
    cid = f"sd-{uuid.uuid4().hex[:8]}"
    with running(containerd, busybox_image, rt, cid, f"system.slice:lxcri:{cid}") as pid:
        scope = check_scope(rt, pid, f"/system.slice/lxcri-{cid}.scope")
    gone(scope)
    assert (ROOT / "system.slice").is_dir()


@pytest.mark.parametrize("rt", list(RUNTIMES.values()), ids=list(RUNTIMES))
def test_empty_prefix(containerd: PrivateContainerd, busybox_image: BusyboxImage,
                      rt: Runtime) -> None:
    # "system.slice::<name>": where runc's systemd driver puts a scope without a prefix, and
    # this runtime's mapping (runtime/cgroups_path.py) of the same value.
    cid = f"np-{uuid.uuid4().hex[:8]}"
    value = f"system.slice::{cid}"
    with running(containerd, busybox_image, rt, cid, value) as pid:
        got = cgroup_of(pid)
        assert got == "/" + cgroups_path.resolve(value), (got, unit_props(got.rsplit("/")[-1]))
        # "-<id>.scope" starts with "-": a unit name all the same (passed after busctl's "--").
        scope = check_scope(rt, pid, got)
    gone(scope)


@pytest.mark.parametrize("rt", list(RUNTIMES.values()), ids=list(RUNTIMES))
def test_kubepods_like_nested_slice(containerd: PrivateContainerd,
                                    busybox_image: BusyboxImage, rt: Runtime) -> None:
    # kubelet's systemd driver: <top>.slice/<top>-besteffort.slice/<top>-besteffort-pod<uid>.slice
    # (a unique top instead of "kubepods", so that the runtimes' slices never mix).
    top = f"kubepods{uuid.uuid4().hex[:6]}"
    uid = uuid.uuid4().hex[:12]
    cid = f"kp-{uuid.uuid4().hex[:8]}"
    slices = (f"{top}.slice", f"{top}-besteffort.slice", f"{top}-besteffort-pod{uid}.slice")
    expected = "/" + "/".join(slices) + f"/cri-containerd-{cid}.scope"
    try:
        with running(containerd, busybox_image, rt, cid,
                     f"{slices[-1]}:cri-containerd:{cid}") as pid:
            scope = check_scope(rt, pid, expected)
        gone(scope)
        # Only the container's own cgroup goes: the pod's slice is kubelet's to remove.
        assert scope.parent.is_dir()
    finally:
        remove_slices(f"{top}.slice", *slices)


@pytest.mark.parametrize("rt", list(RUNTIMES.values()), ids=list(RUNTIMES))
def test_limits_survive_systemd_realising_the_slice(containerd: PrivateContainerd,
                                                    busybox_image: BusyboxImage,
                                                    rt: Runtime) -> None:
    # systemd writes a unit's cgroup files from the unit's properties whenever it realises
    # it again: starting another unit in the slice, a daemon-reload, a set-property on the
    # slice. The scope's limits are its properties (as runc sets them), so they stay.
    cid = f"re-{uuid.uuid4().hex[:8]}"
    probe = f"lxcri-probe-{uuid.uuid4().hex[:8]}"
    limits = ("memory.max", "cpu.weight", "cpu.max", "pids.max")
    unit = f"lxcri-{cid}.scope"
    try:
        with running(containerd, busybox_image, rt, cid, f"system.slice:lxcri:{cid}",
                     "--cpu-shares", "512", "--cpu-quota", "20000", "--cpu-period", "100000"
                     ) as pid:
            scope = ROOT / "system.slice" / unit
            before = {n: (scope / n).read_text().strip() for n in limits}
            props = unit_props(unit)
            sh("systemd-run", "--unit", probe, "--slice", "system.slice", "-p", "TasksMax=10",
               "--wait", "true", timeout=60)
            sh("systemctl", "daemon-reload", timeout=120)
            # The slice's own weight, set to its default: systemd realises the slice and
            # its members again.
            sh("systemctl", "set-property", "--runtime", "system.slice", "CPUWeight=100",
               timeout=60)
            # A set-property on the scope itself rewrites all its cgroup files from its
            # properties: measured with a delegated scope without MemoryMax/TasksMax, this
            # reset memory.max to "max" and pids.max to DefaultTasksMax (the two above did not).
            sh("systemctl", "set-property", "--runtime", unit, "CPUWeight=20", timeout=60)
            after = {n: (scope / n).read_text().strip() for n in limits}
            print(f"{rt.name}: scope limits before {before} after {after}; unit {props}")
            assert cgroup_of(pid) == f"/system.slice/{unit}"
            # runc's conversion of 512 shares to cpu.weight (libcontainer/cgroups/utils.go
            # ConvertCPUSharesToCgroupV2Value): 1 + ((512 - 2) * 9999) / 262142 = 20.
            assert before["memory.max"] == str(MEMORY) and before["cpu.weight"] == "20", before
            assert before["cpu.max"] == "20000 100000", before
            assert props["MemoryMax"] == str(MEMORY) and props["CPUWeight"] == "20", props
            assert after == before, (before, after)
        gone(scope)
    finally:
        sh("systemctl", "revert", "system.slice", unit, check=False, timeout=60)


def test_failed_registration_fails_create_and_leaves_nothing(
        containerd: PrivateContainerd, busybox_image: BusyboxImage) -> None:
    # A unit of the same name already runs, in another slice: systemd refuses
    # StartTransientUnit ("already loaded"). The create must fail naming the unit, leave no
    # task and no cgroup, and not stop the other unit; once that one is gone the same
    # container can be created.
    rt = RUNTIMES["lxcri"]
    cid = f"mf-{uuid.uuid4().hex[:8]}"
    unit = f"lxcri-{cid}.scope"
    other = f"lxcrimf{uuid.uuid4().hex[:6]}.slice"
    scope = ROOT / "system.slice" / unit
    holder = subprocess.Popen(["systemd-run", "--quiet", "--scope", "--unit", unit,
                               "--slice", other, "sleep", "300"])
    try:
        wait_for(lambda: unit_props(unit)["ActiveState"] == "active",
                 what=f"{unit} in {other}", timeout=30)
        r = containerd.ctr("run", "-d", *rt.flags, "--cgroup", f"system.slice:lxcri:{cid}",
                           "--memory-limit", str(MEMORY), busybox_image.ref, cid, "sleep",
                           "300", timeout=120, check=False)
        print(f"ctr run: rc {r.returncode}, stderr {r.stderr.strip()!r}")
        assert r.returncode != 0 and unit in r.stderr, r
        assert containerd.task_status(cid) is None
        assert not scope.exists()
        props = unit_props(unit)
        assert props["ActiveState"] == "active", props
        assert props["ControlGroup"] == f"/{other[:-len('.slice')]}.slice/{unit}", props
        sh("systemctl", "stop", unit)
        holder.wait(timeout=30)
        containerd.remove_container(cid)
        with running(containerd, busybox_image, rt, cid, f"system.slice:lxcri:{cid}") as pid:
            check_scope(rt, pid, f"/system.slice/{unit}")
        gone(scope)
    finally:
        sh("systemctl", "stop", unit, other, check=False)
        with contextlib.suppress(subprocess.TimeoutExpired):
            holder.wait(timeout=30)
        containerd.remove_container(cid)


@pytest_asyncio.fixture
async def world() -> AsyncIterator[World]:
    async with v2_world("sdu-") as w:
        yield w


@pytest.mark.asyncio
async def test_update_sets_the_units_properties(world: World) -> None:
    # runc's systemd driver sets an update's limits as unit properties too (Set:
    # SetUnitProperties), so systemd keeps them when it rewrites the scope's files (here: a
    # set-property on the scope itself, which rewrites them all from the properties).
    cid = f"up{uuid.uuid4().hex[:8]}"
    unit = f"lxcri-{cid}.scope"
    scope = ROOT / "system.slice" / unit
    try:
        h = await world.run(["sleep", "300"], cgroupsPath=f"system.slice:lxcri:{cid}",
                            resources={"memory": {"limit": MEMORY}, "pids": {"limit": 50}})
        assert cgroup_of(h.pid) == f"/system.slice/{unit}"
        assert unit_props(unit)["TasksMax"] == "50", unit_props(unit)
        # The whole LinuxResources, as CRI sends it.
        await h.update({"memory": {"limit": MEMORY // 2}, "pids": {"limit": 40},
                        "cpu": {"shares": 1024}, "devices": [{"allow": False, "access": "rwm"}]})
        props = unit_props(unit)
        assert props["MemoryMax"] == str(MEMORY // 2) and props["TasksMax"] == "40", props
        sh("systemctl", "set-property", "--runtime", unit, "CPUWeight=39", timeout=60)
        assert (scope / "memory.max").read_text().strip() == str(MEMORY // 2)
        assert (scope / "pids.max").read_text().strip() == "40"
        await h.delete()
        gone(scope)
    finally:
        sh("systemctl", "revert", unit, check=False, timeout=60)
