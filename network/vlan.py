"""The VLAN manager: put a container's port on a VLAN, the two ways Proxmox VE does it for
``tag=`` (pve-common ``PVE/Network.pm`` tap_plug; proxmox-api.md section 4.5).

- ``vlan_mode = "bridge"`` (the default): the pool's bridge is VLAN-aware and the container's
  port an access port of the VLAN (``bridge vlan add dev <port> vid N pvid untagged``). The
  bridge is made VLAN-aware only if the runtime may change it (:mod:`network.bridge`).
- ``vlan_mode = "subinterface"``: for a bridge that is not VLAN-aware, a VLAN device
  ``<uplink>.<N>`` on the interface carrying the tagged frames and a bridge ``<bridge>v<N>``
  with that device as its port; the container's port joins ``<bridge>v<N>`` untagged. Both are
  created once and kept, like Proxmox's ``vmbr0vN``; the pool's own bridge is never touched.

On a kernel without 802.1Q both fail before the container's own interfaces exist, with an error
that says so, and what was created for the attempt is removed.
"""

from __future__ import annotations

import asyncio

from network.bridge import BridgeManager, record
from network.config import Pool
from network.links import LinkInfo, Links
from network.plan import vlan_bridge_name, vlan_device_name
from runtime.errdefs import AlreadyExists, FailedPrecondition


class VlanManager:
    def __init__(self, bridges: BridgeManager) -> None:
        self.bridges = bridges

    async def attachment(self, links: Links, pool: Pool, vid: int | None) -> LinkInfo:
        """The bridge a container of ``pool`` on VLAN ``vid`` (None: untagged) is plugged into;
        the caller then calls :meth:`plug` for the port."""
        if vid is None or pool.vlan_mode == "bridge":
            return await self.bridges.ensure(links, pool, vid)
        return await self._subinterface_bridge(links, pool, vid)

    async def plug(self, links: Links, pool: Pool, index: int, name: str, bridge: LinkInfo,
                   vid: int | None) -> None:
        """Attach port ``name`` to ``bridge``, as an access port of ``vid`` when the bridge
        itself carries the VLANs."""
        await links.attach(index, name, bridge)
        if vid is not None and pool.vlan_mode == "bridge":
            await links.port_vlan(index, name, vid)

    async def _subinterface_bridge(self, links: Links, pool: Pool, vid: int) -> LinkInfo:
        uplink = await links.get(pool.uplink)
        if uplink is None:
            raise FailedPrecondition(f"pool {pool.name!r}: uplink {pool.uplink} does not exist")
        name, dev_name = vlan_bridge_name(pool, vid), vlan_device_name(pool, vid)
        made: list[str] = []
        try:
            vbr = await self._ensure(links, name, pool, made)
            dev = await links.get(dev_name)
            if dev is None:
                try:
                    await links.create_vlan(dev_name, uplink, vid)
                    made.append(dev_name)
                    await asyncio.to_thread(record, self.bridges.state_dir,
                                            self.bridges.bridge_netns, dev_name, True, "vlan")
                except AlreadyExists:
                    pass  # another shim made it just now
                dev = await links.get(dev_name)
            if dev is None or dev.kind != "vlan":
                raise FailedPrecondition(f"pool {pool.name!r}: {dev_name} exists but is not a "
                                         "VLAN device")
            if dev.master == 0:
                await links.attach(dev.index, dev_name, vbr)
            elif dev.master != vbr.index:
                raise FailedPrecondition(f"pool {pool.name!r}: {dev_name} is a port of another "
                                         f"bridge, not of {name}")
            return vbr
        except BaseException:
            for created in reversed(made):  # leave nothing made for this attempt only
                await links.delete(created)
                await asyncio.to_thread(record, self.bridges.state_dir,
                                        self.bridges.bridge_netns, created, False)
            raise

    async def _ensure(self, links: Links, name: str, pool: Pool, made: list[str]) -> LinkInfo:
        info = await links.get(name)
        if info is None:
            try:
                await links.create_bridge(name, pool.mtu, None)
                made.append(name)
                await asyncio.to_thread(record, self.bridges.state_dir,
                                        self.bridges.bridge_netns, name, True)
            except AlreadyExists:
                pass
            info = await links.get(name)
        if info is None or info.kind != "bridge":
            raise FailedPrecondition(f"pool {pool.name!r}: {name} exists but is not a bridge")
        return info
