"""``linux.resources`` and ``linux.devices``' cgroup side → ``lxc.cgroup.*`` / ``lxc.cgroup2.*``.

LXC writes ``lxc.cgroup.<file> = <value>`` into the container's cgroup of every v1 hierarchy
that has that file, and ``lxc.cgroup2.<file>`` into its unified cgroup (``man
lxc.container.conf``, CONTROL GROUPS). Which family applies is a host fact: this host is hybrid
(v1 controllers and an empty cgroup2), Proxmox VE 8/9 hosts are pure v2 (DESIGN.md 5.1). The
layout is therefore injected as :class:`CgroupHost`, so the translation stays pure and both
layouts are golden-tested; :func:`detect` reads it from the running host.

Conversions follow the values runc writes (config-linux.md "Control groups"; the v1 → v2
formulas are the kernel's documented ones, cgroup-v2.rst "cpu.weight" / "io.weight").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errdefs import InvalidArgument, NotImplementedErr

Line = tuple[str, str]

#: Device rules runc adds to every container (its default allowed devices): /dev/null, zero,
#: full, tty, random, urandom, console, ptmx and the devpts slaves. LXC's autodev creates these
#: nodes (lxc.autodev), so a "deny all" device cgroup must still allow them.
DEFAULT_DEVICE_RULES = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 5:0 rwm", "c 1:8 rwm",
                        "c 1:9 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm")

#: cgroup v2 controllers whose files ``linux.resources.unified`` may set (cgroup-v2.rst
#: "Controllers"); the core ``cgroup.*`` files are the runtime's, not the spec's.
UNIFIED_CONTROLLERS = ("cpu", "cpuset", "hugetlb", "io", "memory", "misc", "pids", "rdma")
UNIFIED_KEY = re.compile(r"(?:" + "|".join(UNIFIED_CONTROLLERS) + r")(?:\.[A-Za-z0-9_]+)+")


@dataclass(frozen=True)
class CgroupHost:
    """What the host's cgroup layout can express."""

    #: "v1" (legacy or hybrid: the controllers are v1) or "v2" (unified only).
    version: str = "v2"
    #: v1: memory.memsw.* exists (swap accounting on).
    memsw: bool = True
    #: The weight file of the block-I/O controller ("blkio.weight", "blkio.bfq.weight",
    #: "io.weight", "io.bfq.weight"), or "" when the host has none.
    io_weight: str = "io.weight"


def detect(root: Path = Path("/sys/fs/cgroup")) -> CgroupHost:
    """The running host's layout (impure: reads /sys/fs/cgroup)."""
    if (root / "cgroup.controllers").exists():  # pure v2: the unified hierarchy is the root
        weight = next((f for f in ("io.weight", "io.bfq.weight")
                       if list(root.glob(f"*/{f}")) or (root / f).exists()), "io.weight")
        return CgroupHost(version="v2", io_weight=weight)
    weight = next((f for f in ("blkio.weight", "blkio.bfq.weight")
                   if (root / "blkio" / f).exists()), "")
    return CgroupHost(version="v1", memsw=(root / "memory/memory.memsw.limit_in_bytes").exists(),
                      io_weight=weight)


def configure_resources(spec: dict[str, Any], host: CgroupHost,
                        notes: list[str]) -> list[Line]:
    """The cgroup keys for ``linux.resources``; what the host cannot express goes to ``notes``
    (logged by the backend as a downgrade)."""
    linux = spec.get("linux") or {}
    r = linux.get("resources") or {}
    v2 = host.version == "v2"
    prefix = "lxc.cgroup2." if v2 else "lxc.cgroup."
    pairs: list[tuple[str, str]] = []
    pairs += _devices(r.get("devices") or [], linux.get("devices") or [], v2)
    pairs += (_memory_v2 if v2 else _memory_v1)(r.get("memory") or {}, host, notes)
    pairs += _cpu(r.get("cpu") or {}, v2, notes)
    pids = (r.get("pids") or {}).get("limit")
    if pids is not None:
        pairs.append(("pids.max", str(pids) if pids > 0 else "max"))
    pairs += _block_io(r.get("blockIO") or {}, host, notes)
    for key in ("hugepageLimits", "network", "rdma"):
        if r.get(key):
            notes.append(f"linux.resources.{key}: not applied (no such controller set up by "
                         "LXC on this runtime)")
    unified = r.get("unified") or {}
    if unified and not v2:
        raise NotImplementedErr("linux.resources.unified: requires a cgroup v2 host")
    pairs += _unified(unified)
    return [(prefix + key, value) for key, value in pairs]


def _unified(unified: dict[str, Any]) -> list[tuple[str, str]]:
    """``linux.resources.unified``: each key a file of the container's cgroup, each value
    written line by line (runc's ``WriteFileByLine``; LXC writes every ``lxc.cgroup2.<file>``
    line separately, in order). A key must name a controller file (``memory.high``): no "/"
    (LXC would leave the container's cgroup), no ``cgroup.*`` core file, nothing that could
    end the config line (issue 12)."""
    out: list[tuple[str, str]] = []
    for key, value in sorted(unified.items()):
        field = f"linux.resources.unified[{json.dumps(key)}]"
        if not isinstance(key, str) or not UNIFIED_KEY.fullmatch(key):
            raise InvalidArgument(f"{field}: must name a controller file such as memory.high "
                                  f"(controllers: {', '.join(UNIFIED_CONTROLLERS)})")
        if not isinstance(value, str):
            raise InvalidArgument(f"{field}: must be a string")
        lines = [line for line in value.split("\n") if line]
        if not lines:
            raise InvalidArgument(f"{field}: must not be empty")
        out += [(key, line) for line in lines]
    return out


def _devices(rules: list[dict[str, Any]], devices: list[dict[str, Any]],
             v2: bool) -> list[tuple[str, str]]:
    """OCI device rules in order; a rule list that starts by denying everything (runc and
    containerd do) also gets runc's default allowed devices and the spec's linux.devices, so
    the nodes LXC's autodev and the spec create are usable."""
    out: list[tuple[str, str]] = []
    for rule in rules:
        kind = rule.get("type", "a")
        major, minor = rule.get("major", -1), rule.get("minor", -1)
        what = "a" if kind == "a" and major in (None, -1) and minor in (None, -1) else \
            f"{kind} {_num(major)}:{_num(minor)} {rule.get('access', 'rwm')}"
        if what == "a" and rule.get("access", "rwm") != "rwm":
            what = f"a *:* {rule['access']}"
        out.append(("devices.allow" if rule["allow"] else "devices.deny", what))
    if rules and not rules[0]["allow"]:
        extra = list(DEFAULT_DEVICE_RULES)
        extra += [f"{'c' if d['type'] == 'u' else d['type']} {d['major']}:{d['minor']} rwm"
                  for d in devices if d["type"] != "p"]
        out[1:1] = [("devices.allow", e) for e in extra]
    del v2  # same rule syntax: LXC turns lxc.cgroup2.devices.* into an eBPF program
    return out


def _num(value: Any) -> str:
    return "*" if value is None or value == -1 else str(value)


def _memory_v1(mem: dict[str, Any], host: CgroupHost,
               notes: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if mem.get("limit") is not None:
        out.append(("memory.limit_in_bytes", str(mem["limit"])))
    if mem.get("reservation") is not None:
        out.append(("memory.soft_limit_in_bytes", str(mem["reservation"])))
    if mem.get("swap") is not None:
        if host.memsw:
            out.append(("memory.memsw.limit_in_bytes", str(mem["swap"])))
        else:
            notes.append("linux.resources.memory.swap: not applied (swap accounting is off "
                         "on this host)")
    if mem.get("swappiness") is not None:
        out.append(("memory.swappiness", str(mem["swappiness"])))
    if mem.get("disableOOMKiller"):
        out.append(("memory.oom_control", "1"))
    _deprecated_kernel_memory(mem, notes)
    return out


def _memory_v2(mem: dict[str, Any], host: CgroupHost,
               notes: list[str]) -> list[tuple[str, str]]:
    del host
    out: list[tuple[str, str]] = []
    limit = mem.get("limit")
    if limit is not None:
        out.append(("memory.max", str(limit) if limit > 0 else "max"))
    if mem.get("reservation") is not None:
        out.append(("memory.low", str(mem["reservation"])))
    swap = mem.get("swap")
    if swap is not None:
        # OCI swap is memory+swap (the v1 memsw meaning); v2's memory.swap.max is swap alone.
        if swap == -1:
            out.append(("memory.swap.max", "max"))
        elif limit is not None and limit > 0:
            out.append(("memory.swap.max", str(swap - limit)))
        else:
            notes.append("linux.resources.memory.swap: not applied on cgroup v2 without "
                         "memory.limit")
    if mem.get("swappiness") is not None:
        notes.append("linux.resources.memory.swappiness: not applied (cgroup v2 has none)")
    if mem.get("disableOOMKiller"):
        notes.append("linux.resources.memory.disableOOMKiller: not applied (cgroup v2 has "
                     "no oom_control)")
    _deprecated_kernel_memory(mem, notes)
    return out


def _deprecated_kernel_memory(mem: dict[str, Any], notes: list[str]) -> None:
    for key in ("kernel", "kernelTCP"):
        if mem.get(key) is not None:
            notes.append(f"linux.resources.memory.{key}: not applied (deprecated by the OCI "
                         "spec and the kernel)")


def _cpu(cpu: dict[str, Any], v2: bool, notes: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    shares, quota, period = cpu.get("shares"), cpu.get("quota"), cpu.get("period")
    if v2:
        if shares:
            out.append(("cpu.weight", str(1 + ((shares - 2) * 9999) // 262142)))
        if quota is not None or period is not None:
            q = "max" if quota is None or quota <= 0 else str(quota)
            out.append(("cpu.max", f"{q} {period or 100000}"))
    else:
        if shares:
            out.append(("cpu.shares", str(shares)))
        if period:
            out.append(("cpu.cfs_period_us", str(period)))
        if quota is not None:
            out.append(("cpu.cfs_quota_us", str(quota if quota > 0 else -1)))
    for key in ("cpus", "mems"):
        if cpu.get(key):
            out.append((f"cpuset.{key}", cpu[key]))
    for key in ("realtimeRuntime", "realtimePeriod", "idle", "burst"):
        if cpu.get(key):
            notes.append(f"linux.resources.cpu.{key}: not applied")
    return out


def _block_io(blkio: dict[str, Any], host: CgroupHost,
              notes: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    weight = blkio.get("weight")
    if weight is not None:
        if not host.io_weight:
            notes.append("linux.resources.blockIO.weight: not applied (no proportional "
                         "block-I/O controller on this host)")
        elif host.io_weight == "io.weight":  # 10..1000 → 1..10000 (cgroup-v2.rst)
            out.append(("io.weight", str(1 + (weight - 10) * 9999 // 990)))
        else:
            out.append((host.io_weight, str(weight)))
    for key in ("leafWeight", "weightDevice", "throttleReadBpsDevice", "throttleWriteBpsDevice",
                "throttleReadIOPSDevice", "throttleWriteIOPSDevice"):
        if blkio.get(key):
            notes.append(f"linux.resources.blockIO.{key}: not applied")
    return out
