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
        if len(fields) < 5 or len(tail) < 3:
            continue
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
