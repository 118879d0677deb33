"""Finding a container's cgroup from its init PID, on cgroup v2 and on v1/hybrid hosts.

The payload cgroup is ``linux.cgroupsPath`` (``lxc.cgroup.dir.container``, see
runtime.lxc.config.configure_cgroup_dir) or, without one, LXC's ``lxc.payload.<name>``, in
every v1 hierarchy and in the unified one (environment.md section 2, this hybrid host);
Proxmox VE 8/9 hosts are pure cgroup v2 (DESIGN.md section 5.1). Standard library only
(``cleanup`` uses it).
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


def payload(name: str, path: str = "") -> str:
    """The container's cgroup below each hierarchy's root: ``path`` (the resolved
    ``linux.cgroupsPath``), or LXC's default name."""
    return path.strip("/") or f"lxc.payload.{name}"


def monitor(name: str) -> str:
    """The cgroup of LXC's monitor (lxc-execute), LXC's default name, also with a path."""
    return f"lxc.monitor.{name}"


def is_payload(rel: str, name: str, path: str = "") -> bool:
    """Whether the cgroup ``rel`` (below a root) is the container's or one of its children."""
    own = payload(name, path)
    rel = rel.strip("/")
    return rel == own or rel.startswith(own + "/")


def own_cgroup(pid: int | str = "self") -> str:
    """The cgroup of a process, for placing a relative cgroupsPath below it: the unified one on
    a pure v2 host, else the memory hierarchy's ("/" when unknown)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return "/"
    paths = {}
    for line in lines:
        _hier, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else ["v2"]:
            paths[c] = path
    return paths.get("memory") or paths.get("v2") or "/"


def hierarchy_roots(mounts: tuple[dict[str, Path], Path | None] | None = None) -> list[Path]:
    """Every hierarchy's root directory: each v1 mount point, and the cgroup2 one (from
    ``mounts``, runtime.cgroups.read_mounts, when the caller read them already)."""
    if mounts is None:
        v2_root, v1_roots = _mount_points()
    else:
        v1_roots, v2_root = mounts
    roots = sorted(set(v1_roots.values()))
    return [*roots, v2_root] if v2_root is not None else roots


def clear_stale(path: str) -> None:
    """Before a create with ``linux.cgroupsPath``: LXC refuses a container cgroup that exists
    already (measured: "File exists - Failed to create payload cgroup"), where runc would join
    it. An empty one (a container of the same name that was killed) is removed; one that
    still holds processes belongs to a running container and is refused."""
    from runtime.errdefs import AlreadyExists

    # One read of the mount table, one stat per hierarchy (this runs in every create).
    existing = [top for root in hierarchy_roots() if (top := root / path).is_dir()]
    for top in existing:
        if procs(top):
            raise AlreadyExists(f"linux.cgroupsPath: cgroup {top} exists and holds processes")
    for top in existing:
        _rmdir_tree(top)


def _rmdir_tree(top: Path) -> None:
    """Remove an empty cgroup and its empty children, deepest first (rmdir only: a cgroup
    that still holds a process stays)."""
    if not top.is_dir():
        return
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def cgroup_dir(pid: int, name: str, path: str = "") -> Path | None:
    """The directory of ``pid``'s cgroup (with a ``cgroup.procs``), v2 preferred, but only if
    it is the payload cgroup of container ``name`` (``path``: its cgroupsPath) or below it.

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
    candidates: list[tuple[Path, str]] = []
    if v2_root is not None and paths.get("v2", "/") != "/":
        candidates.append((v2_root, paths["v2"]))
    for c in _V1_CONTROLLERS:
        if c in v1_roots and c in paths:
            candidates.append((v1_roots[c], paths[c]))
    for root, rel in candidates:
        candidate = root / rel.lstrip("/")
        if is_payload(rel, name, path) and (candidate / "cgroup.procs").exists():
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


def lxc_cgroup_procs(name: str, path: str = "") -> list[int]:
    """The processes left in the container's cgroup and ``lxc.monitor.<name>`` (a killed
    monitor's leftovers)."""
    found: list[int] = []
    for root in hierarchy_roots():
        for rel in (payload(name, path), monitor(name)):
            found += [p for p in procs(root / rel) if p not in found]
    return found


def remove_lxc_cgroups(name: str, path: str = "") -> None:
    """Remove the container's cgroup (``path``, its cgroupsPath, or ``lxc.payload.<name>``)
    and ``lxc.monitor.<name>`` from every hierarchy.

    LXC removes them when its monitor ends normally; a monitor that was killed (the clean-up
    path) leaves them behind. Only the container's own directory goes, never the parents of a
    cgroupsPath (kubelet's pod cgroups; runc leaves them too). Only empty cgroups can be
    removed (rmdir), deepest first; a cgroup that still holds a process stays (and is logged by
    nobody: the next clean-up retries).
    """
    for root in hierarchy_roots():
        for rel in (payload(name, path), monitor(name)):
            _rmdir_tree(root / rel)
