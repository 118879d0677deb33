"""VMIDs from ``GET /cluster/nextid``, safe under concurrent creates.

``nextid`` answers the first free id but **does not reserve it** (pve-manager
``PVE/API2/Cluster.pm`` → ``nextid``); the id is only taken when a create or clone writes the
config under the cluster-wide lock, and a loser gets 500 ``CT <vmid> already exists on node
'<node>'`` (pve-cluster ``check_vmid_unused``, docs/proxmox.md section 6). So: ask, try, and on
"already exists" try again from a later id, with a little randomness so that shims racing on
one node (or on several cluster nodes) spread out instead of colliding on every round. Its wire
value is a string (proxmox-api.md §3.4); anything but digits is refused.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from runtime import errdefs
from runtime.proxmox.api import PveApi

T = TypeVar("T")
ATTEMPTS = 40


async def next_free(api: PveApi, at_least: int) -> int:
    """``nextid``, or with ``?vmid=`` the first id >= ``at_least`` it accepts."""
    s = api.settings
    if at_least <= s.vmid_lower:
        raw = await api.call("GET", "/cluster/nextid", read=True)
        got = _parse(raw)
        if s.vmid_lower <= got <= s.vmid_upper:
            return got
        at_least = s.vmid_lower
    # Outside the cluster's next-id range (datacenter.cfg): probe ids of our own range.
    for candidate in range(at_least, min(at_least + 64, s.vmid_upper + 1)):
        try:
            return _parse(await api.call("GET", "/cluster/nextid", read=True,
                                         params={"vmid": candidate}))
        except errdefs.InvalidArgument:  # 400 "VM <n> already exists"
            continue
    raise errdefs.Unavailable(f"proxmox: no free VMID in [{at_least}, {s.vmid_upper}]")


def _parse(raw: object) -> int:
    text = str(raw)
    if not text.isdigit():
        raise errdefs.Internal(f"proxmox: /cluster/nextid answered {raw!r}, not a VMID")
    return int(text)


async def with_new_vmid(api: PveApi, make: Callable[[int], Awaitable[T]]) -> tuple[int, T]:
    """``make(vmid)`` with fresh ids until one is not taken by someone else meanwhile."""
    s = api.settings
    floor = s.vmid_lower
    for attempt in range(ATTEMPTS):
        vmid = await next_free(api, floor)
        if attempt:
            vmid = await next_free(api, vmid + random.randrange(0, 2 + attempt * 2))
        if vmid > s.vmid_upper:
            break
        try:
            return vmid, await make(vmid)
        except errdefs.AlreadyExists:
            floor = vmid + 1
    raise errdefs.Unavailable(f"proxmox: no VMID in [{s.vmid_lower}, {s.vmid_upper}] after "
                              f"{ATTEMPTS} attempts (concurrent creates kept taking them)")
