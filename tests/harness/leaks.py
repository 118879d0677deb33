"""What a test leaves behind: mounts, LXC containers and processes, read from /proc and disk.

Take ``snapshot()`` before and after, then ``assert_no_leaks(before, after)``. Only what is new in
``after`` counts, so unrelated state of the machine does not fail a test. The /proc helpers here
(socket listeners, process trees) are also what the harness uses to find shims by PID: processes
are never matched by name.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def _unescape(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def _is_under(path: str, folder: str) -> bool:
    folder = folder.rstrip("/") or "/"
    return path == folder or path.startswith(folder + "/")


def mounts_under(folders: Iterable[Path | str]) -> list[str]:
    """Mount points from /proc/self/mountinfo inside any of ``folders``, in mount order."""
    roots = [os.path.realpath(f) for f in folders]
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if any(_is_under(point, r) for r in roots):
                found.append(point)
    return found


def lxc_containers(lxcpaths: Iterable[Path | str]) -> set[str]:
    """``<lxcpath>/<name>`` for every container directory under each lxcpath.

    This is what ``lxc-ls -P`` lists (it scans the same directories); reading the folder directly
    needs no lxc tools and also sees half-created containers without a ``config`` file yet.
    """
    found: set[str] = set()
    for p in map(Path, lxcpaths):
        if p.is_dir():
            found |= {str(c) for c in p.iterdir() if c.is_dir()}
    return found


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroups_named(names: Iterable[str], max_depth: int = 3) -> set[str]:
    """Cgroup directories (any hierarchy, up to ``max_depth`` below its root) whose name
    contains one of ``names``: a killed container leaves e.g. ``<ctrl>/default/<id>`` or
    ``<ctrl>/lxc.payload.<id>`` behind."""
    names = [n for n in names if n and "/" not in n]
    found: set[str] = set()
    if not names or not CGROUP_ROOT.is_dir():
        return found
    todo = [(h, 0) for h in CGROUP_ROOT.iterdir() if h.is_dir() and not h.is_symlink()]
    while todo:
        d, depth = todo.pop()
        try:
            subs = [c for c in d.iterdir() if c.is_dir()]
        except OSError:
            continue
        for c in subs:
            if any(n in c.name for n in names):
                found.add(str(c))
            if depth < max_depth:
                todo.append((c, depth + 1))
    return found


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # the process is gone or not ours to read
        return b""


def pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def cmdline(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace").strip()


def environ(pid: int) -> str:
    return _read(f"/proc/{pid}/environ").replace(b"\0", b"\n").decode(errors="replace")


def stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (index 0 = state, 1 = ppid)."""
    raw = _read(f"/proc/{pid}/stat").decode(errors="replace")
    return raw[raw.rfind(")") + 2:].split() if raw else []


def start_time(pid: int) -> int | None:
    """Start time in clock ticks: with the PID it identifies a process (PIDs get reused)."""
    f = stat_fields(pid)
    return int(f[19]) if len(f) > 19 else None


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    f = stat_fields(pid)
    return bool(f) and f[0] not in ("Z", "X")


def own_lineage() -> set[int]:
    """This process and its ancestors: never reported or killed."""
    out, pid = set(), os.getpid()
    while pid > 0 and pid not in out:
        out.add(pid)
        f = stat_fields(pid)
        pid = int(f[1]) if f else 0
    return out


def descendants(roots: Iterable[int]) -> set[int]:
    """``roots`` and all processes below them in the parent tree."""
    children: dict[int, list[int]] = {}
    for pid in pids():
        f = stat_fields(pid)
        if f:
            children.setdefault(int(f[1]), []).append(pid)
    out: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, []))
    return out


def processes_mentioning(needles: Sequence[str], *, env: bool = False) -> dict[int, str]:
    """PID → cmdline of live processes whose cmdline (or, with ``env``, environment) contains
    any needle, except this process and its ancestors."""
    mine = own_lineage()
    found = {}
    for pid in pids():
        if pid in mine or not needles:
            continue
        cmd = cmdline(pid)
        text = cmd + ("\n" + environ(pid) if env else "")
        if any(n in text for n in needles) and alive(pid):
            found[pid] = cmd
    return found


def socket_listeners(socket_path: str) -> set[int]:
    """PIDs holding the listening unix socket bound at ``socket_path``.

    /proc/net/unix maps the path to a socket inode; /proc/*/fd links to ``socket:[inode]``.
    """
    path = socket_path.removeprefix("unix://")
    inodes = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            # Columns: Num RefCount Protocol Flags Type St Inode [Path]; flag 0x10000 = listening
            if len(parts) >= 8 and parts[7] == path and int(parts[3], 16) & 0x10000:
                inodes.add(f"socket:[{parts[6]}]")
    found: set[int] = set()
    if not inodes:
        return found
    for pid in pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    found.add(pid)
                    break
            except OSError:
                continue
    return found


def topmost(candidates: set[int]) -> int | None:
    """The candidate whose parent is not a candidate (the daemon, not a forked helper)."""
    for pid in sorted(candidates):
        f = stat_fields(pid)
        if f and int(f[1]) not in candidates:
            return pid
    return min(candidates) if candidates else None


@dataclass(frozen=True)
class Snapshot:
    mounts: frozenset[str] = frozenset()
    lxc: frozenset[str] = frozenset()
    cgroups: frozenset[str] = frozenset()
    processes: dict[int, str] = field(default_factory=dict)


def snapshot(folders: Sequence[Path | str] = (), lxcpaths: Sequence[Path | str] = (),
             needles: Sequence[str] = ()) -> Snapshot:
    """Mounts under ``folders``, containers under ``lxcpaths``, processes whose cmdline
    mentions a folder or another needle (e.g. a container id) and cgroups named after a
    needle that is not a path."""
    return Snapshot(
        mounts=frozenset(mounts_under(folders)),
        lxc=frozenset(lxc_containers(lxcpaths)),
        cgroups=frozenset(cgroups_named(needles)),
        processes=processes_mentioning([str(f) for f in folders] + list(needles)),
    )


def lxc_ls(lxcpath: Path | str) -> list[str]:
    """Names ``lxc-ls -P`` reports (empty when lxc-ls is missing or the path does not exist)."""
    if not Path(lxcpath).is_dir():
        return []
    try:
        out = subprocess.run(["lxc-ls", "-1", "-P", str(lxcpath)], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.split()


def leaks(before: Snapshot, after: Snapshot) -> list[str]:
    """Human-readable descriptions of what ``after`` has that ``before`` had not."""
    out = [f"mount {m}" for m in sorted(after.mounts - before.mounts)]
    out += [f"LXC container {c}" for c in sorted(after.lxc - before.lxc)]
    out += [f"cgroup {c}" for c in sorted(after.cgroups - before.cgroups)]
    out += [f"process {pid}: {cmd}" for pid, cmd in sorted(after.processes.items())
            if before.processes.get(pid) != cmd]
    return out


def assert_no_leaks(before: Snapshot, after: Snapshot) -> None:
    left = leaks(before, after)
    assert not left, "left behind:\n  " + "\n  ".join(left)


def iter_bundle_addresses(task_root: Path) -> Iterator[tuple[Path, str]]:
    """(bundle, address) for every ``<task_root>/<ns>/<id>/address`` file."""
    if not task_root.is_dir():
        return
    for bundle in sorted(task_root.glob("*/*")):
        try:
            yield bundle, (bundle / "address").read_text().strip()
        except OSError:
            continue
