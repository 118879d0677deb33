"""The container's systemd scope, registered as runc's systemd cgroup driver does.

When the host runs systemd and ``linux.cgroupsPath`` is in systemd's ``slice:prefix:name``
form (kubeadm's driver), runc asks systemd over D-Bus for a transient scope unit
``<prefix>-<name>.scope`` in the slice (``StartTransientUnit``; runc's
libcontainer/cgroups/systemd/v2.go ``Apply``): ``PIDs`` the container's init, ``Delegate=yes``
(systemd leaves the subtree alone), ``Slice``, a ``Description``, accounting on,
``DefaultDependencies=no``, and the spec's limits as unit properties
(``genV2ResourcesProperties``), so that systemd writes the same values when it realises the
cgroup again instead of its defaults. Delete stops the unit (``stopUnit``); systemd also stops a
scope by itself once its cgroup is empty.

Here LXC has already made the scope's directory (``lxc.cgroup.dir.container``,
:mod:`runtime.cgroups_path`) and moved the container's init into it when the start-host gate
reports; the scope is registered then with ``PIDs=[init]`` (the PID is already in that cgroup,
so systemd only adopts the directory). No D-Bus library is installed: ``busctl``, systemd's
own client, present wherever systemd is, is run without a shell, one argv item per value.

Which properties: ``MemoryMax``, ``MemoryLow``, ``MemorySwapMax``, ``CPUWeight``,
``CPUQuotaPerSecUSec``/``CPUQuotaPeriodUSec`` and ``TasksMax``, converted as runc converts
them. Not passed (LXC still writes them to the cgroup files): devices (runc adds
``DeviceAllow``), cpuset (``AllowedCPUs``) and ``linux.resources.unified``.

Without systemd (``/run/systemd/system`` missing, sd_booted(3)'s test) nothing is registered:
the cgroupsPath is a plain path, as documented in :mod:`runtime.cgroups_path`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from runtime import cgroups_path, errdefs
from runtime.reaper import Completed

#: sd_booted(3): "the system was booted with systemd" iff this is a directory.
SYSTEMD_RUN_DIR = "/run/systemd/system"
_DEST = "org.freedesktop.systemd1"
_PATH = "/org/freedesktop/systemd1"
_MANAGER = "org.freedesktop.systemd1.Manager"
_UINT64_MAX = 2**64 - 1
#: runc's defCPUQuotaPeriod (µs) and systemd's granularity of CPUQuotaPerSecUSec (10 ms).
_DEFAULT_PERIOD = 100_000
_QUOTA_STEP = 10_000


#: Runs an argv to completion (runtime.reaper.Reaper.run).
Runner = Callable[[Sequence[str]], Awaitable[Completed]]


@dataclass(frozen=True)
class Scope:
    unit: str
    slice: str


def booted(run_dir: str = SYSTEMD_RUN_DIR) -> bool:
    return os.path.isdir(run_dir) and not os.path.islink(run_dir)


def scope_for(value: object) -> Scope | None:
    """The scope to register for a ``linux.cgroupsPath``, or None: not systemd's form, or a
    name that is itself a slice (runc makes a slice unit then; not done here, the directory
    stays a plain cgroup). Validated by :func:`runtime.cgroups_path.systemd_unit`."""
    if not isinstance(value, str) or not cgroups_path.is_systemd_form(value):
        return None
    slice_, unit = cgroups_path.systemd_unit(value)
    if not unit.endswith(".scope"):
        return None
    return Scope(unit, slice_)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def properties(resources: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """``linux.resources`` as the unit's resource properties ``(name, D-Bus type, value)``,
    converted as runc's genV2ResourcesProperties does."""
    res = resources or {}
    mem = res.get("memory") or {}
    cpu = res.get("cpu") or {}
    pids = res.get("pids") or {}
    out: list[tuple[str, str, str]] = []

    def u64(n: int) -> str:
        return str(_UINT64_MAX if n < 0 else n)

    limit = _int(mem.get("limit"))
    if limit:
        out.append(("MemoryMax", "t", u64(limit)))
    reservation = _int(mem.get("reservation"))
    if reservation:
        out.append(("MemoryLow", "t", u64(reservation)))
    swap = _int(mem.get("swap"))
    # OCI's swap is memory+swap; systemd's MemorySwapMax is swap alone (runc's
    # ConvertMemorySwapToCgroupV2Value); -1 is unlimited, 0 unset.
    if swap == -1:
        out.append(("MemorySwapMax", "t", u64(-1)))
    elif swap and limit and limit > 0 and swap >= limit:
        out.append(("MemorySwapMax", "t", str(swap - limit)))
    shares = _int(cpu.get("shares"))
    if shares:
        # runc's ConvertCPUSharesToCgroupV2Value, as runtime.lxc.resources writes cpu.weight.
        out.append(("CPUWeight", "t", str(1 + ((shares - 2) * 9999) // 262142)))
    quota, period = _int(cpu.get("quota")) or 0, _int(cpu.get("period")) or 0
    if period > 0:
        out.append(("CPUQuotaPeriodUSec", "t", str(period)))
    if quota or period:
        per_sec = _UINT64_MAX
        if quota > 0:
            per_sec = quota * 1_000_000 // (period or _DEFAULT_PERIOD)
            # systemd keeps CPUQuotaPerSecUSec in 10 ms steps; runc rounds up.
            per_sec = -(-per_sec // _QUOTA_STEP) * _QUOTA_STEP
        out.append(("CPUQuotaPerSecUSec", "t", str(per_sec)))
    tasks = _int(pids.get("limit"))
    if tasks is not None and (tasks > 0 or tasks == -1):
        out.append(("TasksMax", "t", u64(tasks)))
    return out


def _busctl(*args: str) -> list[str]:
    # "--" ends busctl's options: a unit name may start with "-" ("-<name>.scope").
    return ["busctl", "--system", "--quiet", "--timeout=30", "--", "call", _DEST, _PATH,
            _MANAGER, *args]


def start_argv(scope: Scope, pid: int, resources: dict[str, Any] | None) -> list[str]:
    """``StartTransientUnit(name, mode, properties, aux)`` for the scope with ``pid``."""
    props: list[tuple[str, str, str | list[str]]] = [
        ("Description", "s", f"lxcri container {scope.unit}"),
        ("Slice", "s", scope.slice),
        ("PIDs", "au", ["1", str(pid)]),
        ("Delegate", "b", "true"),
        ("MemoryAccounting", "b", "true"),
        ("CPUAccounting", "b", "true"),
        ("IOAccounting", "b", "true"),
        ("TasksAccounting", "b", "true"),
        ("DefaultDependencies", "b", "false"),
        *properties(resources),
    ]
    argv = _busctl("StartTransientUnit", "ssa(sv)a(sa(sv))", scope.unit, "replace",
                   str(len(props)))
    for name, sig, value in props:
        argv += [name, sig, *(value if isinstance(value, list) else [value])]
    argv.append("0")  # no auxiliary units
    return argv


def set_argv(unit: str, resources: dict[str, Any] | None) -> list[str] | None:
    """``SetUnitProperties(name, runtime, properties)`` for an update, as runc's ``Set``
    (until reboot: ``runtime`` true); None when the update sets no property."""
    props = properties(resources)
    if not props:
        return None
    argv = _busctl("SetUnitProperties", "sba(sv)", unit, "true", str(len(props)))
    for name, sig, value in props:
        argv += [name, sig, value]
    return argv


def stop_argv(unit: str) -> list[str]:
    return _busctl("StopUnit", "ss", unit, "replace")


def show_argv(unit: str) -> list[str]:
    return ["systemctl", "show", "--property=LoadState,ActiveState,ControlGroup", "--", unit]


def _text(r: Completed) -> str:
    return (r.stderr or r.stdout).decode(errors="replace").strip() or f"status {r.returncode}"


async def _show(run: Runner, unit: str) -> dict[str, str]:
    r = await run(show_argv(unit))
    out = r.stdout.decode(errors="replace")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


async def register(run: Runner, scope: Scope, pid: int, resources: dict[str, Any] | None,
                   cgroup: str, attempts: int = 200) -> None:
    """Start the transient scope and wait until systemd has it active with ``cgroup`` (the
    path LXC made, without the leading "/"). FailedPrecondition names the unit when systemd
    refuses it (a unit of that name exists: left alone) or does not have it active there (then
    it is stopped)."""
    r = await run(start_argv(scope, pid, resources))
    if r.returncode != 0:
        # Not stopped: the unit is not ours (a unit of that name exists, or none was made).
        raise errdefs.FailedPrecondition(
            f"systemd scope {scope.unit}: StartTransientUnit failed: {_text(r)}")
    props: dict[str, str] = {}
    # The start job runs after the call returns (runc waits for its JobRemoved signal);
    # systemd runs a scope's start job at once, so this ends on the first read or two.
    for _ in range(attempts):
        props = await _show(run, scope.unit)
        if props.get("ActiveState") in ("active", "failed"):
            break
        await asyncio.sleep(0.05)
    if props.get("ActiveState") != "active" or props.get("ControlGroup") != "/" + cgroup:
        await stop(run, scope.unit)
        raise errdefs.FailedPrecondition(
            f"systemd scope {scope.unit}: not active in /{cgroup} after StartTransientUnit "
            f"({', '.join(f'{k}={v}' for k, v in sorted(props.items()))})")


async def stop(run: Runner, unit: str) -> None:
    """StopUnit; a unit systemd no longer has (it stopped the empty scope itself) is fine."""
    r = await run(stop_argv(unit))
    if r.returncode != 0 and b"NoSuchUnit" not in r.stderr and b"not loaded" not in r.stderr:
        raise errdefs.Internal(f"systemd scope {unit}: StopUnit failed: {_text(r)}")


async def set_properties(run: Runner, unit: str, resources: dict[str, Any] | None) -> None:
    """An update's new limits as the unit's properties, so that systemd keeps them when it
    rewrites the scope's cgroup files."""
    argv = set_argv(unit, resources)
    if argv is None:
        return
    r = await run(argv)
    if r.returncode != 0:
        raise errdefs.Internal(f"systemd scope {unit}: SetUnitProperties failed: {_text(r)}")
