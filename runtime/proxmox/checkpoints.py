"""Checkpoints of a Proxmox CT: Proxmox snapshots named ``checkpoint-<unix>`` (``-<n>`` added
for a second one in the same second), as the ZFS storage names its ZFS snapshots
(storage/layout.py), with the same rules:

- a checkpoint is ``POST /nodes/{node}/lxc/{vmid}/snapshot`` (a ``vzsnapshot`` task; on
  ``local-zfs`` a ZFS snapshot of the CT's subvol, constant time);
- only the newest ``keep`` checkpoints stay; older ones are deleted after each new one
  (``DELETE …/snapshot/{name}``); other snapshots (an operator's) are never touched;
- rollback only to the newest checkpoint: Proxmox (ZFS) can roll back only to a volume's most
  recent snapshot (pve-storage ``ZFSPoolPlugin.pm`` → ``volume_rollback_is_possible``:
  ``can't rollback, '<snap>' is not most recent snapshot``); an older one is refused here
  first, with the names of the newer ones, and a running task is refused (its CT would be
  stopped under it: pve-container ``__snapshot_rollback_vm_stop``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from runtime import errdefs
from runtime.proxmox.api import PveApi

PREFIX = "checkpoint-"
_NAME = re.compile(r"^checkpoint-(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class Checkpoint:
    name: str
    snaptime: int


def _order(name: str) -> tuple[int, int] | None:
    m = _NAME.match(name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


async def list_checkpoints(api: PveApi, vmid: int) -> list[Checkpoint]:
    """Oldest first."""
    items = await api.call("GET", "/nodes/{node}/lxc/{vmid}/snapshot", vmid=vmid, read=True)
    out = [Checkpoint(str(i["name"]), int(i.get("snaptime") or 0)) for i in items or []
           if isinstance(i, dict) and _order(str(i.get("name", ""))) is not None]
    return sorted(out, key=lambda c: _order(c.name) or (0, 0))


async def take(api: PveApi, vmid: int, *, keep: int = 3) -> str:
    """A new checkpoint; returns its name. Then the retention."""
    existing = {c.name for c in await list_checkpoints(api, vmid)}
    now = int(time.time())
    name, n = f"{PREFIX}{now}", 0
    while name in existing:
        n += 1
        name = f"{PREFIX}{now}-{n}"
    await api.run("POST", "/nodes/{node}/lxc/{vmid}/snapshot", vmid=vmid,
                  what=f"checkpoint {name}",
                  params={"snapname": name, "description": "proxmox-lxcri checkpoint"})
    if keep > 0:
        listed = await list_checkpoints(api, vmid)
        for old in listed[:-keep]:
            await api.run("DELETE", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}",
                          vmid=vmid, snapname=old.name, what=f"retention: delete {old.name}")
    return name


async def rollback(api: PveApi, vmid: int, name: str | None = None, *,
                   container: str = "") -> str:
    """Roll the (stopped) CT back to checkpoint ``name``, default the newest; returns its name.
    The errors read like the ZFS storage's (storage/checkpoints.py), naming the container and
    its CT."""
    who = f"container {container} (CT {vmid})" if container else f"CT {vmid}"
    listed = await list_checkpoints(api, vmid)
    names = [c.name for c in listed]
    if not names:
        raise errdefs.NotFound(f"{who} has no checkpoint to restore")
    name = name or names[-1]
    if name not in names:
        raise errdefs.NotFound(f"{who} has no checkpoint {name} (it has {', '.join(names)})")
    newer = names[names.index(name) + 1:]
    if newer:
        raise errdefs.FailedPrecondition(
            f"cannot restore {name} of {who}: Proxmox rolls back only to the newest "
            f"checkpoint ({names[-1]}); delete the newer ones first: {', '.join(newer)}")
    cur = await api.call("GET", "/nodes/{node}/lxc/{vmid}/status/current", vmid=vmid,
                         read=True)
    if isinstance(cur, dict) and cur.get("status") == "running":
        raise errdefs.FailedPrecondition(
            f"cannot restore {name} of {who}: it is running; stop the task first (ctr task "
            "kill): Proxmox stops a running CT to roll it back, which would end the task's "
            "process under containerd")
    await api.run("POST", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}/rollback", vmid=vmid,
                  snapname=name, what=f"rollback to {name}")
    return name
