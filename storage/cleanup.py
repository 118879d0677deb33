"""Destroying a container's dataset from the short-lived ``delete`` action, after a shim crash.

containerd runs ``containerd-shim-proxmox-v2 delete`` after every task and gives it 5 s; after a
crash the daemon never released the dataset, so this does, from ``<state_dir>/storage.json``
(written by :mod:`storage.provisioner` before the dataset was made). Synchronous and standard
library only (plus the pure parsers), like the rest of ``delete``: a few ``zfs`` calls of about
20 ms each here (environment.md section 3). Same rules as :class:`storage.datasets.DatasetManager`:
destroy the dataset with its checkpoints, or retain it if a checkpoint is still needed.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from storage import layout
from storage.state import read_state, remove_state
from storage.zfs_parse import first_line, is_busy, parse_get

TIMEOUT = 3.0
BUSY_RETRIES = (0.02, 0.05, 0.1, 0.2, 0.3)


def _zfs(*args: str, deadline: float, retry_busy: bool = False) -> subprocess.CompletedProcess[str]:
    delays = list(BUSY_RETRIES if retry_busy else ())
    while True:
        r = subprocess.run(["zfs", *args], capture_output=True, text=True,
                           timeout=max(0.1, deadline - time.monotonic()))
        if r.returncode == 0 or not is_busy(r.stderr) or not delays:
            return r
        time.sleep(delays.pop(0))


def cleanup(state_dir: Path, timeout: float = TIMEOUT) -> str:
    """Destroy (or retain) what the storage provisioner recorded; returns what it did, for the
    log ("" when there was nothing). Raises OSError when ZFS refused, naming the dataset."""
    state = read_state(state_dir)
    if state is None:
        return ""
    deadline = time.monotonic() + timeout
    dataset, pool = str(state["dataset"]), str(state["pool"])
    try:
        done = _destroy(dataset, pool, deadline)
    except FileNotFoundError:
        raise OSError(f"cannot destroy {dataset}: the zfs command is missing") from None
    except subprocess.TimeoutExpired:
        raise OSError(f"cannot destroy {dataset}: zfs did not answer in {timeout} s") from None
    remove_state(state_dir)
    return done


def _destroy(dataset: str, pool: str, deadline: float) -> str:
    r = _zfs("get", "-H", "-p", "-r", "-o", "name,property,value", layout.PROP_EXPORTED,
             dataset, deadline=deadline)
    if r.returncode != 0:
        if "does not exist" in r.stderr:
            return ""
        raise OSError(f"zfs get {dataset}: {first_line(r.stderr)}")
    held = [n for n, p in parse_get(r.stdout).items()
            if "@" in n and p.get(layout.PROP_EXPORTED, "-") != "-"]
    r = _zfs("get", "-H", "-p", "-r", "-o", "name,property,value", "origin", pool,
             deadline=deadline)
    if r.returncode == 0:
        held += [n for n, p in parse_get(r.stdout).items()
                 if p.get("origin", "-").startswith(dataset + "@")]
    _zfs("umount", dataset, deadline=deadline, retry_busy=True)
    if held:
        retained = f"{pool}/{layout.RETAINED}/{dataset.rsplit('/', 1)[1]}-{time.time_ns()}"
        _zfs("create", "-p", f"{pool}/{layout.RETAINED}", deadline=deadline)
        r = _zfs("rename", dataset, retained, deadline=deadline, retry_busy=True)
        if r.returncode != 0:
            raise OSError(f"zfs rename {dataset}: {first_line(r.stderr)}")
        _zfs("set", "canmount=noauto", retained, deadline=deadline)
        _zfs("umount", retained, deadline=deadline, retry_busy=True)
        return f"retained {dataset} as {retained}"
    r = _zfs("destroy", "-r", dataset, deadline=deadline, retry_busy=True)
    if r.returncode != 0 and is_busy(r.stderr):
        _zfs("umount", "-f", dataset, deadline=deadline)
        r = _zfs("destroy", "-r", dataset, deadline=deadline, retry_busy=True)
    if r.returncode != 0 and "does not exist" not in r.stderr:
        raise OSError(f"zfs destroy {dataset}: {first_line(r.stderr)}")
    return f"destroyed {dataset}"
