"""Finding and reading a container's cgroups, on cgroup v1/hybrid hosts (this machine) and on
pure cgroup v2 hosts (Proxmox VE 8 and 9).

A process's cgroups come from ``/proc/<pid>/cgroup`` (``id:controllers:path``) joined to the
mount points in ``/proc/self/mountinfo`` (``man 7 cgroups``). Standard library only; no
protobuf (``shim.metrics`` encodes what :func:`read_stats` returns).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errdefs import NotFound


@dataclass(frozen=True)
class Cgroups:
    """The directories of one process's cgroups: v1 per controller, and the v2 one."""

    v1: dict[str, Path] = field(default_factory=dict)
    v2: Path | None = None

    @property
    def is_v2_only(self) -> bool:
        """True on a pure cgroup v2 host, where the v2 Metrics encoding applies."""
        return not self.v1 and self.v2 is not None

    def path(self, controller: str) -> Path | None:
        """Where ``controller``'s files are: its v1 hierarchy, or v2 if it is enabled there."""
        if controller in self.v1:
            return self.v1[controller]
        if self.v2 is not None and controller in _v2_controllers(self.v2):
            return self.v2
        return None


def _v2_controllers(path: Path) -> set[str]:
    try:
        return set((path / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def cgroup_mounts(mountinfo: str) -> tuple[dict[str, Path], Path | None]:
    """v1 mount points by controller (``name=systemd`` included) and the cgroup2 mount point."""
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3 or fields[3] != "/":
            continue  # a bind mount of a sub-cgroup is not the hierarchy's root
        mountpoint = Path(fields[4].replace("\\040", " "))
        if tail[0] == "cgroup2" and v2 is None:
            v2 = mountpoint
        elif tail[0] == "cgroup":
            for opt in tail[2].split(","):
                if opt in ("rw", "ro") or opt.startswith(("relatime", "nosuid", "nodev",
                                                          "noexec", "clone_children")):
                    continue
                v1.setdefault(opt, mountpoint)
    return v1, v2


def parse_proc_cgroup(text: str, v1_mounts: dict[str, Path],
                      v2_mount: Path | None) -> Cgroups:
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for line in text.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        rel = path.lstrip("/")
        if hid == "0" and controllers == "":
            if v2_mount is not None:
                v2 = v2_mount / rel
            continue
        for c in controllers.split(","):
            if c in v1_mounts:
                v1[c] = v1_mounts[c] / rel
    return Cgroups(v1, v2)


def read_mounts() -> tuple[dict[str, Path], Path | None]:
    """:func:`cgroup_mounts` of this process's mount table."""
    return cgroup_mounts(Path("/proc/self/mountinfo").read_text())


def of_pid(pid: int, mounts: tuple[dict[str, Path], Path | None] | None = None) -> Cgroups:
    """The cgroups of ``pid``; ``mounts`` (:func:`read_mounts`) when the caller read them
    already."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        raise NotFound(f"process {pid} has no cgroups: it is gone") from None
    v1m, v2m = read_mounts() if mounts is None else mounts
    return parse_proc_cgroup(text, v1m, v2m)


def read_pids(cg: Cgroups) -> list[int]:
    """Every pid in the container's cgroup (the pids or freezer hierarchy, or v2)."""
    for base in (cg.v1.get("pids"), cg.v1.get("freezer"), cg.v1.get("memory"), cg.v2):
        if base is None:
            continue
        try:
            return sorted({int(x) for x in (base / "cgroup.procs").read_text().split()})
        except OSError:
            continue
    return []


def read_int(path: Path, default: int = 0) -> int:
    """An integer cgroup file; ``max`` (no limit) and missing files give ``default``."""
    try:
        text = path.read_text().strip()
    except OSError:
        return default
    if not text or text == "max":
        return default
    try:
        return int(text.split()[0])
    except ValueError:
        return default


def read_flat(path: Path) -> dict[str, int]:
    """A flat-keyed file such as ``memory.stat`` or ``cpu.stat``: ``key value`` lines."""
    out: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


# -- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Raw cgroup figures of one container; ``shim.metrics`` encodes them as containerd's
    ``io.containerd.cgroups.v1.Metrics`` (v1/hybrid) or ``...v2.Metrics`` (pure v2)."""

    v2: bool
    pids_current: int = 0
    pids_limit: int = 0
    #: v1: ``cpuacct.*`` in ns; v2: ``cpu.stat`` in µs (``usage_usec`` …).
    cpu: dict[str, int] = field(default_factory=dict)
    per_cpu: tuple[int, ...] = ()
    #: ``cpu.stat`` throttling counters (v1) — v2 has them in ``cpu``.
    throttling: dict[str, int] = field(default_factory=dict)
    #: ``memory.stat`` as is.
    memory_stat: dict[str, int] = field(default_factory=dict)
    #: v1: usage/limit/max/failcnt per entry (``usage``, ``swap``, ``kernel``, ``kernel_tcp``);
    #: v2: ``usage``, ``usage_limit``, ``swap_usage``, ``swap_limit``, ``max_usage``.
    memory: dict[str, dict[str, int]] = field(default_factory=dict)
    #: v1 ``memory.oom_control`` or v2 ``memory.events``.
    memory_events: dict[str, int] = field(default_factory=dict)
    #: Counters of the container's network interfaces (loopback excluded): name → rx_bytes,
    #: rx_packets, rx_errors, rx_dropped, tx_bytes, tx_packets, tx_errors, tx_dropped.
    network: dict[str, dict[str, int]] = field(default_factory=dict)


_UNLIMITED_V1 = 0x7FFFFFFFFFFFF000  # what v1 memory.limit_in_bytes reports with no limit


def read_stats(cg: Cgroups) -> Stats:
    return _stats_v2(cg) if cg.is_v2_only else _stats_v1(cg)


def _stats_v1(cg: Cgroups) -> Stats:
    pids = cg.path("pids")
    acct = cg.path("cpuacct")
    cpu = cg.path("cpu")
    mem = cg.path("memory")
    cpu_usage: dict[str, int] = {}
    per_cpu: tuple[int, ...] = ()
    if acct is not None:
        cpu_usage["total"] = read_int(acct / "cpuacct.usage")
        cpu_usage["user"] = read_int(acct / "cpuacct.usage_user")
        cpu_usage["kernel"] = read_int(acct / "cpuacct.usage_sys")
        try:
            per_cpu = tuple(int(x) for x in (acct / "cpuacct.usage_percpu").read_text().split())
        except (OSError, ValueError):
            per_cpu = ()
    memory: dict[str, dict[str, int]] = {}
    if mem is not None:
        for entry, prefix in (("usage", "memory."), ("swap", "memory.memsw."),
                              ("kernel", "memory.kmem."), ("kernel_tcp", "memory.kmem.tcp.")):
            memory[entry] = {
                "usage": read_int(mem / f"{prefix}usage_in_bytes"),
                "limit": read_int(mem / f"{prefix}limit_in_bytes"),
                "max": read_int(mem / f"{prefix}max_usage_in_bytes"),
                "failcnt": read_int(mem / f"{prefix}failcnt"),
            }
    return Stats(
        v2=False,
        pids_current=read_int(pids / "pids.current") if pids else 0,
        pids_limit=read_int(pids / "pids.max") if pids else 0,
        cpu=cpu_usage,
        per_cpu=per_cpu,
        throttling=read_flat(cpu / "cpu.stat") if cpu else {},
        memory_stat=read_flat(mem / "memory.stat") if mem else {},
        memory=memory,
        memory_events=read_flat(mem / "memory.oom_control") if mem else {},
    )


def _stats_v2(cg: Cgroups) -> Stats:
    assert cg.v2 is not None
    d = cg.v2
    memory = {"v2": {
        "usage": read_int(d / "memory.current"),
        "usage_limit": read_int(d / "memory.max"),
        "swap_usage": read_int(d / "memory.swap.current"),
        "swap_limit": read_int(d / "memory.swap.max"),
        "max_usage": read_int(d / "memory.peak"),
    }}
    return Stats(
        v2=True,
        pids_current=read_int(d / "pids.current"),
        pids_limit=read_int(d / "pids.max"),
        cpu=read_flat(d / "cpu.stat"),
        memory_stat=read_flat(d / "memory.stat"),
        memory=memory,
        memory_events=read_flat(d / "memory.events"),
    )


# -- control ------------------------------------------------------------------------------------


def write_value(path: Path, value: str, what: str) -> None:
    """Write one cgroup file; an error names the OCI field and the kernel's reason."""
    _write(path, value, what)


def _write(path: Path, value: str, what: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        from runtime.errdefs import InvalidArgument

        raise InvalidArgument(f"{what}: cannot write {value!r} to {path}: "
                              f"{exc.strerror or exc}") from None


def freeze(cg: Cgroups, frozen: bool) -> None:
    """Freeze or thaw every process of the cgroup (v1 freezer, or v2 ``cgroup.freeze``)."""
    v1 = cg.v1.get("freezer")
    if v1 is not None:
        _write(v1 / "freezer.state", "FROZEN" if frozen else "THAWED", "freezer")
    elif cg.v2 is not None:
        _write(cg.v2 / "cgroup.freeze", "1" if frozen else "0", "freezer")
    else:
        raise NotFound("no freezer cgroup for this container")


def is_frozen(cg: Cgroups) -> bool:
    v1 = cg.v1.get("freezer")
    try:
        if v1 is not None:
            return (v1 / "freezer.state").read_text().strip() == "FROZEN"
        if cg.v2 is not None:
            return "frozen 1" in (cg.v2 / "cgroup.events").read_text()
    except OSError:
        pass
    return False


# -- live updates (the Task API's Update, CRI's UpdateContainerResources) ------------------------


@dataclass(frozen=True)
class Write:
    """One cgroup file to write, and the OCI field it carries (named in errors)."""

    path: Path
    value: str
    field: str


#: OCI ``LinuxResources`` sections, with the type each must have (config-linux.md).
_SECTIONS: dict[str, type] = {
    "devices": list, "memory": dict, "cpu": dict, "pids": dict, "blockIO": dict,
    "hugepageLimits": list, "network": dict, "rdma": dict, "unified": dict,
}
_INT_FIELDS = {
    "memory": ("limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness"),
    "cpu": ("shares", "quota", "period", "realtimeRuntime", "realtimePeriod", "burst", "idle"),
    "pids": ("limit",),
    "blockIO": ("weight", "leafWeight"),
}


def check_resources(resources: Any) -> dict[str, Any]:
    """The shape of an OCI ``LinuxResources`` object (hostile input: it comes from the
    client): every known section of the right type, numbers that are integers, strings that
    are strings. Unknown sections are refused, so a typo is not silently dropped."""
    from runtime.errdefs import InvalidArgument

    if not isinstance(resources, dict):
        raise InvalidArgument("resources: must be an object")
    for section, value in resources.items():
        kind = _SECTIONS.get(section)
        if kind is None:
            raise InvalidArgument(f"resources.{section}: unknown field")
        if value is not None and not isinstance(value, kind):
            raise InvalidArgument(f"resources.{section}: must be "
                                  f"{'a list' if kind is list else 'an object'}")
    for section, keys in _INT_FIELDS.items():
        for key in keys:
            v = (resources.get(section) or {}).get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise InvalidArgument(f"resources.{section}.{key}: must be an integer")
    for key in ("cpus", "mems"):
        v = (resources.get("cpu") or {}).get(key)
        if v is not None and (not isinstance(v, str) or not _CPUSET.match(v)):
            raise InvalidArgument(f"resources.cpu.{key}: must be a list like 0-3,5")
    for i, rule in enumerate(resources.get("devices") or []):
        if not isinstance(rule, dict) or not isinstance(rule.get("allow"), bool):
            raise InvalidArgument(f"resources.devices[{i}]: must be an object with allow")
    for i, h in enumerate(resources.get("hugepageLimits") or []):
        if (not isinstance(h, dict) or not isinstance(h.get("pageSize"), str)
                or not _PAGE_SIZE.match(h["pageSize"]) or not isinstance(h.get("limit"), int)
                or isinstance(h.get("limit"), bool)):
            raise InvalidArgument(f"resources.hugepageLimits[{i}]: must be "
                                  "{pageSize: \"2MB\", limit: <bytes>}")
    # The create-time rule (runtime.lxc.resources): a controller's file, never a core
    # cgroup.* one (cgroup.procs would move processes) and no "/".
    from runtime.lxc.resources import UNIFIED_KEY

    for key, v in (resources.get("unified") or {}).items():
        if not isinstance(key, str) or not UNIFIED_KEY.fullmatch(key) or not isinstance(v, str):
            raise InvalidArgument(f"resources.unified.{key}: must name a controller file such "
                                  "as memory.high, with a string value")
        if "\0" in v or not v.strip("\n"):
            raise InvalidArgument(f"resources.unified.{key}: must be a non-empty value "
                                  "without NUL")
    return resources


_CPUSET = re.compile(r"^\s*(\d+(-\d+)?(,\d+(-\d+)?)*)?\s*$")
_PAGE_SIZE = re.compile(r"^[0-9]+[KMG]B$")


def update_writes(cg: Cgroups, resources: dict[str, Any]) -> tuple[list[Write], list[str]]:
    """The writes that apply ``resources`` (already :func:`check_resources`-checked) to a
    running container's cgroups, in the order the kernel accepts them, and the notes on what
    is accepted but not applied.

    What changes follows ``runc update``: memory limit/reservation/swap, cpu shares, quota,
    period, burst, realtime and cpuset, pids, the block-I/O weight and ``unified``. Like runc,
    a zero number means "leave as is", and the device rules are not touched on update (CRI
    sends the container's deny-all list with every update; the device cgroup was set at
    create). Hugepage limits, which ``runc update`` ignores, are applied where the hugetlb
    controller exists, since they can change live."""
    out: list[Write] = []
    notes: list[str] = []
    out += _memory_writes(cg, resources.get("memory") or {})
    out += _cpu_writes(cg, resources.get("cpu") or {}, notes)
    out += _pids_writes(cg, resources.get("pids") or {})
    out += _blkio_writes(cg, resources.get("blockIO") or {}, notes)
    out += _hugetlb_writes(cg, resources.get("hugepageLimits") or [], notes)
    unified = resources.get("unified") or {}
    if unified:
        if cg.v2 is None or not cg.is_v2_only:
            from runtime.errdefs import NotImplementedErr

            # runc's v1 manager refuses it too (ErrV1NoUnified).
            raise NotImplementedErr("resources.unified: requires a cgroup v2 host")
        # Line by line, as runc's WriteFileByLine and LXC at create.
        out += [Write(cg.v2 / key, line, f"unified.{key}")
                for key, value in sorted(unified.items())
                for line in value.split("\n") if line]
    if resources.get("devices"):
        notes.append("resources.devices: not changed on update (as runc)")
    for key in ("network", "rdma"):
        if resources.get(key):
            notes.append(f"resources.{key}: not applied")
    return out, notes


def _memory_writes(cg: Cgroups, mem: dict[str, Any]) -> list[Write]:
    limit, swap = mem.get("limit") or 0, mem.get("swap") or 0
    reservation = mem.get("reservation") or 0
    out: list[Write] = []
    m1 = cg.v1.get("memory")
    if m1 is not None:
        if limit == -1 and swap == 0:
            swap = -1  # unlimited memory makes swap unlimited too, as runc does
        lim = Write(m1 / "memory.limit_in_bytes", str(limit), "memory.limit")
        sw = Write(m1 / "memory.memsw.limit_in_bytes", str(swap), "memory.swap")
        has_memsw = (m1 / "memory.memsw.limit_in_bytes").exists()
        if limit and swap and has_memsw:
            # memory.limit <= memory.memsw.limit at every moment (cgroup-v1/memory.rst): raise
            # swap first when it goes above the current memory limit, else lower memory first.
            current = read_int(m1 / "memory.limit_in_bytes", _UNLIMITED_V1)
            out += [sw, lim] if swap == -1 or current < swap else [lim, sw]
        else:
            out += [lim] if limit else []
            out += [sw] if swap and has_memsw else []
        if reservation:
            out.append(Write(m1 / "memory.soft_limit_in_bytes", str(reservation),
                             "memory.reservation"))
    elif cg.v2 is not None and cg.is_v2_only:
        d = cg.v2
        if swap:
            effective = limit or _read_max(d / "memory.max")
            out.append(Write(d / "memory.swap.max", _v2_swap(swap, effective), "memory.swap"))
        if limit:
            out.insert(0, Write(d / "memory.max", "max" if limit < 0 else str(limit),
                                "memory.limit"))
        if reservation:
            out.append(Write(d / "memory.low", str(reservation), "memory.reservation"))
    return out


def _read_max(path: Path) -> int:
    """A v2 ``*.max`` file as a number, -1 for ``max``."""
    try:
        text = path.read_text().strip()
    except OSError:
        return -1
    return -1 if text in ("", "max") else int(text.split()[0])


def _v2_swap(swap: int, limit: int) -> str:
    """OCI swap is memory+swap (the v1 memsw meaning); v2's memory.swap.max is swap alone
    (runc's ConvertMemorySwapToCgroupV2Value semantics)."""
    from runtime.errdefs import InvalidArgument

    if swap == -1 or limit == -1:
        return "max"
    if swap < limit:
        raise InvalidArgument("resources.memory.swap: must be at least memory.limit")
    return str(swap - limit)


def _cpu_writes(cg: Cgroups, cpu: dict[str, Any], notes: list[str]) -> list[Write]:
    out: list[Write] = []
    shares, quota, period = cpu.get("shares") or 0, cpu.get("quota") or 0, cpu.get("period") or 0
    c1 = cg.v1.get("cpu")
    v2 = cg.v2 if cg.v2 is not None and cg.is_v2_only else None
    if c1 is not None:
        if shares:
            out.append(Write(c1 / "cpu.shares", str(shares), "cpu.shares"))
        # Period first: a quota below the old period's minimum would otherwise be refused.
        if period:
            out.append(Write(c1 / "cpu.cfs_period_us", str(period), "cpu.period"))
        if quota:
            out.append(Write(c1 / "cpu.cfs_quota_us", str(quota if quota > 0 else -1),
                             "cpu.quota"))
        if cpu.get("burst") is not None:
            out.append(Write(c1 / "cpu.cfs_burst_us", str(cpu["burst"]), "cpu.burst"))
        for key, file in (("realtimePeriod", "cpu.rt_period_us"),
                          ("realtimeRuntime", "cpu.rt_runtime_us")):
            if cpu.get(key):
                out.append(Write(c1 / file, str(cpu[key]), f"cpu.{key}"))
    elif v2 is not None:
        if shares:
            # runc's shares→weight mapping: [2, 262144] → [1, 10000].
            out.append(Write(v2 / "cpu.weight", str(1 + ((shares - 2) * 9999) // 262142),
                             "cpu.shares"))
        if quota or period:
            current = (v2 / "cpu.max").read_text().split() if (v2 / "cpu.max").exists() \
                else ["max", "100000"]
            q = ("max" if quota < 0 else str(quota)) if quota else current[0]
            out.append(Write(v2 / "cpu.max", f"{q} {period or current[-1]}", "cpu.quota"))
        if cpu.get("burst") is not None:
            out.append(Write(v2 / "cpu.max.burst", str(cpu["burst"]), "cpu.burst"))
        if cpu.get("idle") is not None:
            out.append(Write(v2 / "cpu.idle", str(cpu["idle"]), "cpu.idle"))
        if cpu.get("realtimeRuntime") or cpu.get("realtimePeriod"):
            notes.append("resources.cpu.realtime*: not applied (cgroup v2 has no rt files)")
    cs = cg.v1.get("cpuset") or v2
    for key in ("cpus", "mems"):
        if cpu.get(key) and cs is not None:
            out.append(Write(cs / f"cpuset.{key}", cpu[key], f"cpu.{key}"))
    return out


def _pids_writes(cg: Cgroups, pids: dict[str, Any]) -> list[Write]:
    limit = pids.get("limit") or 0
    base = cg.v1.get("pids") or (cg.v2 if cg.is_v2_only else None)
    if not limit or base is None:
        return []
    return [Write(base / "pids.max", "max" if limit < 0 else str(limit), "pids.limit")]


def _blkio_writes(cg: Cgroups, blkio: dict[str, Any], notes: list[str]) -> list[Write]:
    weight = blkio.get("weight") or 0
    if not weight:
        return []
    b1 = cg.v1.get("blkio")
    if b1 is not None:
        for name in ("blkio.weight", "blkio.bfq.weight"):
            if (b1 / name).exists():
                return [Write(b1 / name, str(weight), "blockIO.weight")]
    elif cg.v2 is not None and cg.is_v2_only and (cg.v2 / "io.weight").exists():
        # 10..1000 → 1..10000 (cgroup-v2.rst "io.weight", runc's conversion).
        return [Write(cg.v2 / "io.weight", str(1 + (weight - 10) * 9999 // 990),
                      "blockIO.weight")]
    notes.append("resources.blockIO.weight: not applied (no proportional block-I/O "
                 "controller on this host)")
    return []


def _hugetlb_writes(cg: Cgroups, limits: list[dict[str, Any]],
                    notes: list[str]) -> list[Write]:
    out: list[Write] = []
    h1 = cg.v1.get("hugetlb")
    v2 = cg.v2 if cg.v2 is not None and cg.is_v2_only else None
    for h in limits:
        size, limit = h["pageSize"], h["limit"]
        if h1 is not None and (h1 / f"hugetlb.{size}.limit_in_bytes").exists():
            out.append(Write(h1 / f"hugetlb.{size}.limit_in_bytes", str(limit),
                             f"hugepageLimits.{size}"))
        elif v2 is not None and (v2 / f"hugetlb.{size}.max").exists():
            out.append(Write(v2 / f"hugetlb.{size}.max", str(limit), f"hugepageLimits.{size}"))
        elif limit:
            notes.append(f"resources.hugepageLimits.{size}: not applied (no hugetlb "
                         "controller for that page size on this host)")
    return out
