"""Building and removing shim-managed networks: the body of
:class:`network.provisioner.NetworkProvisioner`.

``prepare`` decides the mode (:func:`network.plan.make_plan`). For a container that joins a
namespace it was given (CNI, ``ctr run --with-ns``) it changes nothing. Otherwise it builds, in
this order, each step undone if a later one fails:

1. the network record and the container's pointer to it (so a ``delete`` after a killed shim
   finds what to remove even if the shim dies in the middle of the next steps);
2. the pool's bridge (:class:`network.bridge.BridgeManager`), VLAN-aware if a VLAN is asked;
3. an address lease (:class:`network.ipam.Ipam`);
4. a named network namespace (:mod:`network.netns`);
5. the veth pair, its peer created inside the namespace as ``eth0`` with the stable MAC, the host
   end on the bridge (as an access port of the VLAN), both up;
6. inside: loopback up, the address, the default route;
7. ``resolv.conf`` and ``hosts`` bind-mounted read-only through the spec's mounts;

and returns a config whose spec's network namespace entry has ``path`` = that namespace, so
the backend joins it exactly as in the CNI case. Containers of one group (a pod) share the
first member's network; the last one to leave tears it down.

This module imports ``runtime.types`` and ``runtime.config`` (both standard-library leaves) to
speak the Provisioner seam; pyroute2 loads only when a managed network is really built.
Deletion goes through :mod:`network.cleanup`, shared with the ``delete`` action.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import ipaddress
import logging
from pathlib import Path
from typing import Any

from network import cleanup, dns, netns, records
from network.config import NetworkSettings, parse
from network.ipam import Ipam
from network.plan import NETWORK_KEYS, NetworkPlan, make_plan, network_entry
from runtime import config as runtime_config
from runtime.errdefs import AlreadyExists, Internal
from runtime.types import CreateConfig

log = logging.getLogger(__name__)

RESOLV_DEST = "/etc/resolv.conf"
HOSTS_DEST = "/etc/hosts"


class ManagedNetworks:
    def __init__(self, state_dir: Path) -> None:
        self.default_state_dir = state_dir
        self._locks: dict[str, asyncio.Lock] = {}

    async def prepare(self, config: CreateConfig) -> CreateConfig:
        settings = parse(config.settings)
        annotations = _annotations(config.spec)
        overrides = {k: v for k, v in runtime_config.overrides(config.settings,
                                                               annotations).items()
                     if k in NETWORK_KEYS}
        plan = make_plan(config.spec, annotations, overrides, settings,
                         container_id=config.id, namespace=config.namespace)
        if plan is None:
            return config
        state_dir = settings.state_dir or self.default_state_dir
        # Per network (container or pod), so that a pod's second member waits for the first to
        # finish building; other containers never wait on it. The file lock of the state
        # directory is only ever taken inside the worker threads below, never across netlink.
        lock = self._locks.setdefault(f"{plan.namespace}/{plan.key}", asyncio.Lock())
        async with lock:
            rec, created = await asyncio.to_thread(records.join, state_dir,
                                                   _new_record(plan), config.id)
            try:
                await asyncio.to_thread(records.save_pointer, config.state_dir, state_dir, rec,
                                        config.id)
                if created:
                    rec = await self._build(plan, rec, settings, state_dir)
                elif not rec.address:
                    raise Internal(f"network of {plan.key} is still being set up by another "
                                   "member")
                files = await asyncio.to_thread(_write_dns, config.state_dir, plan, rec)
            except BaseException:
                left = await asyncio.to_thread(cleanup.leave, config.state_dir)
                for err in left:
                    log.warning("container %s: undoing its network: %s", config.id, err)
                raise
        log.info("container %s: network %s on %s, address %s/%d", config.id, rec.netns,
                 rec.bridge, rec.address, rec.prefixlen)
        return dataclasses.replace(config, spec=_joined_spec(config.spec, rec.netns, files))

    async def _build(self, plan: NetworkPlan, rec: records.Record, settings: NetworkSettings,
                     state_dir: Path) -> records.Record:
        from network.bridge import BridgeManager  # pyroute2: imported only when needed
        from network.links import Links
        from network.vlan import VlanManager

        pool = plan.pool
        async with Links(plan.bridge_netns or None) as host:
            vlans = VlanManager(BridgeManager(state_dir, plan.bridge_netns,
                                              settings.owned_bridges))
            bridge = await vlans.attachment(host, pool, plan.vlan)
            rec.bridge = bridge.name
            addr = await asyncio.to_thread(Ipam(state_dir).allocate, pool, rec.owner,
                                           plan.requested.ip if plan.requested else None)
            rec.address, rec.prefixlen = str(addr), pool.subnet.prefixlen
            rec.owns_netns = True
            await asyncio.to_thread(records.update, state_dir, rec)
            await self._create_netns(plan, rec, state_dir)
            index = await host.create_veth(plan.host_ifname, plan.peer_ifname, plan.netns_path,
                                           plan.mac, plan.mtu)
            rec.veth = True
            await asyncio.to_thread(records.update, state_dir, rec)
            await vlans.plug(host, pool, index, plan.host_ifname, bridge, plan.vlan)
            await host.up(index, plan.host_ifname)
        async with Links(plan.netns_path) as inside:
            await inside.configure_peer(plan.peer_ifname,
                                        ipaddress.IPv4Interface(f"{addr}/{pool.subnet.prefixlen}"),
                                        pool.gateway)
        return rec

    @staticmethod
    async def _create_netns(plan: NetworkPlan, rec: records.Record, state_dir: Path) -> None:
        try:
            await asyncio.to_thread(netns.create, plan.netns_path)
        except FileExistsError:
            rec.owns_netns = False  # someone else's: tear-down must leave it alone
            await asyncio.to_thread(records.update, state_dir, rec)
            raise AlreadyExists(
                f"network namespace {plan.netns_path} already exists (left by an earlier "
                f"container {plan.key}? `ip netns del {plan.netns_path.name}` removes it)"
            ) from None
        except OSError as exc:
            raise Internal(f"creating network namespace {plan.netns_path}: {exc}") from None


def _new_record(plan: NetworkPlan) -> records.Record:
    return records.Record(namespace=plan.namespace, key=plan.key, pool=plan.pool.name,
                          netns=str(plan.netns_path), host_ifname=plan.host_ifname,
                          bridge=plan.pool.bridge, bridge_netns=plan.bridge_netns,
                          vlan=plan.vlan)


def _annotations(spec: dict[str, Any]) -> dict[str, str]:
    value = spec.get("annotations") or {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _write_dns(state_dir: Path, plan: NetworkPlan, rec: records.Record) -> dict[str, Path]:
    directory = state_dir / "network"
    files = {HOSTS_DEST: dns.write(directory, dns.HOSTS, dns.render_hosts(
        ipaddress.IPv4Address(rec.address), plan.hostname))}
    if plan.nameservers or plan.search:
        files[RESOLV_DEST] = dns.write(directory, dns.RESOLV, dns.render_resolv(
            plan.nameservers, plan.search, plan.options))
    return files


def _joined_spec(spec: dict[str, Any], netns_path: str,
                 files: dict[str, Path]) -> dict[str, Any]:
    """A copy of ``spec`` that joins ``netns_path`` and bind-mounts the DNS files."""
    out = copy.deepcopy(spec)
    found = network_entry(out)
    if found is None:  # make_plan only plans for specs with a new network namespace entry
        raise Internal("spec has no network namespace entry")
    out["linux"]["namespaces"][found[0]] = {"type": "network", "path": netns_path}
    return dns.bind_mounts(out, files)
