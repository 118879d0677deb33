"""Finding a container's cgroup from its init PID, on cgroup v2 and on v1/hybrid hosts.

LXC puts the payload in ``lxc.payload.<name>`` in every v1 hierarchy and in the unified one
(environment.md section 2, this hybrid host); Proxmox VE 8/9 hosts are pure cgroup v2
(DESIGN.md section 5.1). Standard library only (``cleanup`` uses it).
"""

from __future__ import annotations

import os
from pathlib import Path

from runtime.cgroups import cgroup_mounts

#: v1 controllers whose hierarchy is searched when there is no usable v2 path; any one holds
#: every process of the container.
_V1_CONTROLLERS = ("pids", "freezer", "memory", "cpu", "devices")


def _mount_points() -> tuple[Path | None, dict[str, Path]]:
    """The cgroup2 mount point, and each v1 controller's mount point (/proc/self/mountinfo)."""
    v1, v2 = cgroup_mounts(Path("/proc/self/mountinfo").read_text())
    return v2, v1


def cgroup_dir(pid: int, name: str) -> Path | None:
    """The directory of ``pid``'s cgroup (with a ``cgroup.procs``), v2 preferred, but only if
    it is LXC's payload cgroup for container ``name`` (or below it).

    The guard matters: the cgroup of any other process (a reused PID, or a process that is not
    in a container) holds unrelated processes, which "kill all" must never touch."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return None
    v2_root, v1_roots = _mount_points()
    paths = {}
    for line in lines:
        hier, controllers, path = line.split(":", 2)
        if hier == "0" and controllers == "":
            paths["v2"] = path
        for c in controllers.split(","):
            paths[c] = path
    candidates: list[Path] = []
    if v2_root is not None and paths.get("v2", "/") != "/":
        candidates.append(v2_root / paths["v2"].lstrip("/"))
    for c in _V1_CONTROLLERS:
        if c in v1_roots and c in paths:
            candidates.append(v1_roots[c] / paths[c].lstrip("/"))
    payload = f"lxc.payload.{name}"
    for candidate in candidates:
        if payload in candidate.parts and (candidate / "cgroup.procs").exists():
            return candidate
    return None


def procs(directory: Path | None) -> list[int]:
    """PIDs in ``directory``'s cgroup and its children (an empty list once it is gone)."""
    if directory is None:
        return []
    found: list[int] = []
    try:
        for procs_file in [directory / "cgroup.procs", *directory.glob("**/cgroup.procs")]:
            for pid in procs_file.read_text().split():
                if int(pid) not in found:
                    found.append(int(pid))
    except (FileNotFoundError, OSError):
        pass
    return found


def remove_lxc_cgroups(name: str) -> None:
    """Remove ``lxc.payload.<name>`` and ``lxc.monitor.<name>`` from every hierarchy.

    LXC removes them when its monitor ends normally; a monitor that was killed (the clean-up
    path) leaves them behind. Only empty cgroups can be removed (rmdir), deepest first; a cgroup
    that still holds a process stays (and is logged by nobody: the next clean-up retries).
    """
    v2_root, v1_roots = _mount_points()
    roots = set(v1_roots.values()) | ({v2_root} if v2_root is not None else set())
    for root in roots:
        for prefix in ("lxc.payload.", "lxc.monitor."):
            top = root / f"{prefix}{name}"
            if not top.is_dir():
                continue
            for dirpath, _dirs, _files in os.walk(top, topdown=False):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass
