"""What the LXC backend persists for the short-lived ``delete`` action (standard library only).

One JSON file, ``<state_dir>/lxc.json``, written atomically (temp file, fsync, rename;
DESIGN.md section 9). Schema, version 1::

    {
      "version": 1,
      "name": "default-web",            # LXC container name
      "lxcpath": "/run/proxmox-lxcri/lxc",
      "bundle": "/run/containerd/.../web",
      "mounts": ["/run/containerd/.../web/rootfs"],   # what *we* mounted, in mount order
      "rootfs": "/run/containerd/.../web/rootfs",     # the container's root on the host
      "pid": 4242,                      # host PID of the container's init (0 = not known yet)
      "pid_start_time": 123456,         # field 22 of /proc/<pid>/stat, guards PID reuse
      "monitor_pid": 4241,              # the LXC monitor (lxcri-start)
      "monitor_start_time": 123450,
      "exit_status": null,              # set once the monitor has exited
      "cgroup": "kubepods/pod1/web",    # linux.cgroupsPath below the roots ("": LXC's
                                        # lxc.payload.<name>)
      "systemd_unit": ""                # the transient scope registered for it under
                                        # systemd (runtime.systemd_scope), "" if none
    }
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

FILENAME = "lxc.json"
VERSION = 1


@dataclass
class PersistedState:
    name: str
    lxcpath: str
    bundle: str
    mounts: list[str] = field(default_factory=list)
    #: The container's root directory on the host (exec resolves programs in it).
    rootfs: str = ""
    pid: int = 0
    pid_start_time: int = 0
    monitor_pid: int = 0
    monitor_start_time: int = 0
    exit_status: int | None = None
    cgroup: str = ""
    #: The transient systemd scope registered for it (runtime.systemd_scope), "" if none.
    systemd_unit: str = ""
    version: int = VERSION


def save(state_dir: Path, state: PersistedState, *, only_if_present: bool = False) -> None:
    """Write atomically: a reader sees the old or the new file, never a torn one.

    ``only_if_present`` updates an existing file only (a clean-up may have removed it)."""
    path = state_dir / FILENAME
    if only_if_present and not path.exists():
        return
    tmp = path.with_name(f".{FILENAME}.{os.getpid()}.tmp")
    data = json.dumps(asdict(state), sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def load(state_dir: Path) -> PersistedState | None:
    """The persisted state, or None when there is none (already cleaned up)."""
    try:
        raw = json.loads((state_dir / FILENAME).read_bytes())
    except FileNotFoundError:
        return None
    known = set(PersistedState.__dataclass_fields__)
    return PersistedState(**{k: v for k, v in raw.items() if k in known})


def remove(state_dir: Path) -> None:
    try:
        (state_dir / FILENAME).unlink()
    except FileNotFoundError:
        pass


def start_time(pid: int) -> int:
    """Field 22 (starttime, clock ticks since boot) of ``/proc/<pid>/stat``; 0 if gone.

    Parsed after the last ')' because the command name may contain spaces and parentheses.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[19])  # fields[0] is field 3 (state)


def is_alive(pid: int, expected_start: int) -> bool:
    """True if ``pid`` is the same process as recorded and not a zombie."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    rest = stat[stat.rindex(b")") + 2:].split()
    return rest[0] != b"Z" and int(rest[19]) == expected_start
