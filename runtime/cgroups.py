"""Finding and reading a container's cgroups, on cgroup v1/hybrid hosts (this machine) and on
pure cgroup v2 hosts (Proxmox VE 8 and 9).

A process's cgroups come from ``/proc/<pid>/cgroup`` (``id:controllers:path``) joined to the
mount points in ``/proc/self/mountinfo`` (``man 7 cgroups``). Standard library only; no
protobuf (``shim.metrics`` encodes what :func:`read_stats` returns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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


def of_pid(pid: int) -> Cgroups:
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        raise NotFound(f"process {pid} has no cgroups: it is gone") from None
    v1m, v2m = cgroup_mounts(Path("/proc/self/mountinfo").read_text())
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


def resource_writes(cg: Cgroups, resources: dict[str, object]) -> list[tuple[Path, str, str]]:
    """(file, value, OCI field) to apply OCI ``LinuxResources`` to a live cgroup, for the
    host's layout: v1 files where the controller is a v1 hierarchy, else v2 files. Fields not
    listed here are refused by the caller, never ignored."""
    out: list[tuple[Path, str, str]] = []
    mem = resources.get("memory") or {}
    cpu = resources.get("cpu") or {}
    pids = resources.get("pids") or {}
    assert isinstance(mem, dict) and isinstance(cpu, dict) and isinstance(pids, dict)
    m1, c1, p1 = cg.v1.get("memory"), cg.v1.get("cpu"), cg.v1.get("pids")
    v2 = cg.v2
    if (limit := mem.get("limit")) is not None:
        if m1 is not None:
            out.append((m1 / "memory.limit_in_bytes", str(limit), "memory.limit"))
        elif v2 is not None:
            out.append((v2 / "memory.max", "max" if int(str(limit)) < 0 else str(limit),
                        "memory.limit"))
    if (swap := mem.get("swap")) is not None:
        if m1 is not None:
            out.append((m1 / "memory.memsw.limit_in_bytes", str(swap), "memory.swap"))
        elif v2 is not None and limit is not None:
            # OCI swap is memory+swap; cgroup v2 swap.max is swap alone (runc's conversion).
            sw = int(str(swap))
            out.append((v2 / "memory.swap.max",
                        "max" if sw < 0 else str(max(sw - int(str(limit)), 0)), "memory.swap"))
    if (shares := cpu.get("shares")) is not None:
        if c1 is not None:
            out.append((c1 / "cpu.shares", str(shares), "cpu.shares"))
        elif v2 is not None:
            # runc's shares→weight mapping: [2, 262144] → [1, 10000].
            weight = 1 + ((int(str(shares)) - 2) * 9999) // 262142
            out.append((v2 / "cpu.weight", str(weight), "cpu.shares"))
    quota, period = cpu.get("quota"), cpu.get("period")
    if quota is not None or period is not None:
        if c1 is not None:
            if period is not None:
                out.append((c1 / "cpu.cfs_period_us", str(period), "cpu.period"))
            if quota is not None:
                out.append((c1 / "cpu.cfs_quota_us", str(quota), "cpu.quota"))
        elif v2 is not None:
            q = "max" if quota is None or int(str(quota)) < 0 else str(quota)
            out.append((v2 / "cpu.max", f"{q} {period or 100000}", "cpu.quota"))
    if (reservation := mem.get("reservation")) is not None:
        if m1 is not None:
            out.append((m1 / "memory.soft_limit_in_bytes", str(reservation),
                        "memory.reservation"))
        elif v2 is not None:
            out.append((v2 / "memory.low", str(reservation), "memory.reservation"))
    cs1 = cg.v1.get("cpuset")
    for key in ("cpus", "mems"):
        if (value := cpu.get(key)) is not None:
            base = cs1 if cs1 is not None else v2
            if base is not None:
                out.append((base / f"cpuset.{key}", str(value), f"cpu.{key}"))
    if (plimit := pids.get("limit")) is not None:
        value = "max" if int(str(plimit)) <= 0 else str(plimit)
        if p1 is not None:
            out.append((p1 / "pids.max", value, "pids.limit"))
        elif v2 is not None:
            out.append((v2 / "pids.max", value, "pids.limit"))
    return out


SUPPORTED_UPDATE = {"memory": {"limit", "swap", "reservation"}, "cpu": {"shares", "quota",
                    "period", "cpus", "mems"}, "pids": {"limit"}}
