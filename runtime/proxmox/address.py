"""net0's address from the project's IPAM (network/ipam.py), the same pools and leases as the
LXC backend's shim-managed networks: ``[network.pools.<name>]`` gives the bridge, the subnet,
the gateway and the VLAN; the pool is the ``lxcri.proxmox.io/network`` annotation's or
``[network] default_pool``. The address goes into ``net0`` as ``ip=<addr>/<len>,gw=<gw>``
with ``host-managed=1`` (PVE 9.1: the host configures it, so images without a network stack
get it too). Without a pool, net0 is the configured bridge and the ``ip`` annotation, if any.
Leases are owned by ``pve:<namespace>/<id>`` and released with the CT (also by the ``delete``
action). Standard library only (the ``delete`` action imports it)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import errdefs


@dataclass(frozen=True)
class Lease:
    pool: str
    state_dir: str
    owner: str
    address: str      # a.b.c.d/len
    gateway: str | None
    bridge: str
    vlan: int | None


def owner(namespace: str, container_id: str) -> str:
    return f"pve:{namespace}/{container_id}"


def allocate(settings: dict[str, Any], overrides: dict[str, str], default_state_dir: Path,
             namespace: str, container_id: str) -> Lease | None:
    from network import config as netconfig
    from network.ipam import Ipam

    net = netconfig.parse(settings)
    name = overrides.get("network") or net.default_pool
    if not name:
        return None
    pool = net.pools.get(name)
    if pool is None:
        raise errdefs.InvalidArgument(f"annotation lxcri.proxmox.io/network: no pool {name!r} "
                                      "in [network.pools]")
    requested = None
    if "ip" in overrides:
        try:
            requested = ipaddress.IPv4Interface(overrides["ip"].split(",")[0]).ip
        except ValueError:
            raise errdefs.InvalidArgument(f"annotation ip: {overrides['ip']!r}") from None
        if not pool.usable(requested):
            raise errdefs.InvalidArgument(f"annotation ip: {requested} is not usable in pool "
                                          f"{name!r} ({pool.subnet})")
    state_dir = net.state_dir or default_state_dir
    who = owner(namespace, container_id)
    addr = Ipam(state_dir).allocate(pool, who, requested)
    return Lease(name, str(state_dir), who, f"{addr}/{pool.subnet.prefixlen}",
                 str(pool.gateway) if pool.gateway else None, pool.bridge, pool.vlan)


def release(pool: str, state_dir: str, who: str) -> None:
    from network.ipam import Ipam

    Ipam(Path(state_dir)).release(pool, who)
