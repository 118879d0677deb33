"""The bridge manager: make sure a pool's bridge exists and can carry the requested VLAN.

Ownership rule (the issue's "never modify or delete a bridge the project did not create"):
a bridge that already exists is used as it is; it is changed (VLAN filtering switched on) or
removed only when the project created it, which ``<state_dir>/bridges.json`` records, or when
``[network] owned_bridges`` lists it. A Proxmox ``vmbr0`` made by ifupdown2 is thus never
touched: its ``bridge-vlan-aware yes`` is the operator's choice.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from network import statefile
from network.config import Pool
from network.links import LinkInfo, Links
from runtime.errdefs import AlreadyExists, FailedPrecondition

BRIDGES_FILE = "bridges.json"


def _key(bridge_netns: str, name: str) -> str:
    return f"{bridge_netns or '-'}|{name}"


def created_by_us(state_dir: Path, bridge_netns: str, name: str) -> bool:
    with statefile.locked(state_dir):
        data = statefile.read_json(state_dir / BRIDGES_FILE) or {}
    return _key(bridge_netns, name) in data


def record(state_dir: Path, bridge_netns: str, name: str, present: bool,
           kind: str = "bridge") -> None:
    """Note (or forget) that the runtime created interface ``name`` (a bridge or, for VLAN
    sub-interface wiring, a VLAN device)."""
    with statefile.locked(state_dir):
        data: dict[str, Any] = statefile.read_json(state_dir / BRIDGES_FILE) or {}
        if present:
            data[_key(bridge_netns, name)] = {"name": name, "netns": bridge_netns,
                                              "kind": kind, "created": time.time()}
        else:
            data.pop(_key(bridge_netns, name), None)
        statefile.write_json(state_dir / BRIDGES_FILE, data)


class BridgeManager:
    def __init__(self, state_dir: Path, bridge_netns: str, owned: tuple[str, ...]) -> None:
        self.state_dir = state_dir
        self.bridge_netns = bridge_netns
        self.owned = owned

    async def may_modify(self, name: str) -> bool:
        return name in self.owned or await asyncio.to_thread(
            created_by_us, self.state_dir, self.bridge_netns, name)

    async def ensure(self, links: Links, pool: Pool, vlan: int | None) -> LinkInfo:
        """The pool's bridge, created if missing (with the pool's bridge address and MTU) and
        VLAN-aware when ``vlan`` is set. A bridge created here and unusable is removed again."""
        info = await links.get(pool.bridge)
        created = False
        if info is None:
            try:
                await links.create_bridge(pool.bridge, pool.mtu, pool.bridge_address)
                created = True
                await asyncio.to_thread(record, self.state_dir, self.bridge_netns,
                                        pool.bridge, True)
            except AlreadyExists:
                pass  # another shim made it just now; use it as it is
            info = await links.get(pool.bridge)
            if info is None:
                raise FailedPrecondition(f"bridge {pool.bridge} disappeared while being set up")
        if info.kind != "bridge":
            raise FailedPrecondition(f"pool {pool.name!r}: interface {pool.bridge} exists but is "
                                     f"a {info.kind or 'plain'} interface, not a bridge")
        if vlan is None or info.vlan_filtering:
            return info
        if not created and not await self.may_modify(pool.bridge):
            raise FailedPrecondition(
                f"pool {pool.name!r}: bridge {pool.bridge} is not VLAN-aware and was not created "
                f"by proxmox-lxcri; make it VLAN-aware (ifupdown2: bridge-vlan-aware yes) or list "
                f"it in [network] owned_bridges")
        try:
            await links.enable_vlan_filtering(info)
        except BaseException:
            if created:  # leave nothing: the bridge was made for this request only
                await self.remove(links, pool.bridge)
            raise
        refreshed = await links.get(pool.bridge)
        return refreshed or info

    async def remove(self, links: Links, name: str) -> bool:
        """Delete a bridge the project created or owns; refuses any other."""
        if not await self.may_modify(name):
            raise FailedPrecondition(f"bridge {name} was not created by proxmox-lxcri and is "
                                     "not in [network] owned_bridges; not removing it")
        gone = await links.delete(name)
        await asyncio.to_thread(record, self.state_dir, self.bridge_netns, name, False)
        return gone
