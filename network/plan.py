"""What network a container gets: the pure derivation of a :class:`NetworkPlan`.

Two modes (DESIGN.md section 7):

- **joined** (the Kubernetes/CNI default, and ``ctr run --with-ns network:<path>``): the spec's
  network namespace entry has a ``path``; the container joins it and the shim configures nothing.
  A spec without a network namespace entry shares the host's network; also nothing to do.
- **shim-managed**: the spec asks for a *new* network namespace and either an annotation
  (``lxcri.proxmox.io/network``, ``/ip``, ``/vlan``) or ``[network] default_pool`` chooses a
  pool. The shim then makes the namespace, a veth on the pool's bridge (on a VLAN if asked), an
  address, a default route and DNS files.

Asking for a managed network on a container that joins a namespace is an error that names both,
never silently ignored. Containers of one group (a pod: ``io.kubernetes.cri.sandbox-id`` or
``io.containerd.runc.v2.group``) share one network, keyed by the group.

Pure: standard library, ``runtime.errdefs`` and :mod:`network.config` only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from network.config import NetworkSettings, Pool, vlan_id
from runtime.errdefs import InvalidArgument

#: Annotations naming the group whose containers share one network (the same keys
#: ``shim.manager.group_of`` groups shims by).
GROUP_ANNOTATIONS = ("io.kubernetes.cri.sandbox-id", "io.containerd.runc.v2.group")
#: Override keys (``lxcri.proxmox.io/<key>``) that select a shim-managed network.
SELECTING = ("network", "ip", "vlan")
#: Override keys this package reads; others belong to other packages (storage, ...).
NETWORK_KEYS = (*SELECTING, "dns", "dns-search", "mtu", "bridge")
PEER_IFNAME = "eth0"
_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class NetworkPlan:
    """Everything needed to build (and later tear down) one shim-managed network."""

    #: The owner of the network: the group (pod) id, or the container id.
    key: str
    #: The containerd namespace (two namespaces may reuse an id).
    namespace: str
    pool: Pool
    netns_path: Path
    #: Host end of the veth pair (IFNAMSIZ: at most 15 characters).
    host_ifname: str
    mac: str
    mtu: int
    vlan: int | None
    #: A requested address (CIDR) or None for the next free one of the pool.
    requested: ipaddress.IPv4Interface | None
    nameservers: tuple[str, ...]
    search: tuple[str, ...]
    options: tuple[str, ...]
    hostname: str
    #: Namespace of the bridge and of the host end ("" = the shim's own).
    bridge_netns: str = ""
    peer_ifname: str = PEER_IFNAME


def group_key(container_id: str, annotations: dict[str, str]) -> str:
    for key in GROUP_ANNOTATIONS:
        value = annotations.get(key, "")
        if value:
            return value
    return container_id


def digest(namespace: str, key: str) -> str:
    return hashlib.sha256(f"{namespace}/{key}".encode()).hexdigest()


def host_ifname(namespace: str, key: str) -> str:
    # Proxmox names the host end veth<vmid>i<n>; a container id is no number, so a hash of
    # (namespace, key) gives a stable 15-character name (IFNAMSIZ 16 with the NUL).
    return "lx" + digest(namespace, key)[:13]


def stable_mac(namespace: str, key: str) -> str:
    """A locally administered unicast MAC derived from the owner: the same container (or pod)
    gets the same MAC after a restart, so neighbours' ARP caches stay right."""
    raw = bytearray(bytes.fromhex(digest(namespace, key)[16:28]))
    raw[0] = (raw[0] & 0xFC) | 0x02  # bit 0 = multicast off, bit 1 = locally administered
    return ":".join(f"{b:02x}" for b in raw)


def netns_name(namespace: str, key: str) -> str:
    """``lxcri-<namespace>-<key>`` when readable and short, else ``lxcri-<hash>``."""
    name = f"lxcri-{namespace}-{key}"
    if _SAFE.match(f"{namespace}{key}") and len(name) <= 128:
        return name
    return "lxcri-" + digest(namespace, key)[:24]


def vlan_bridge_name(pool: Pool, vid: int) -> str:
    """Proxmox's per-VLAN bridge for a bridge that is not VLAN-aware: ``vmbr0v100``."""
    return f"{pool.bridge}v{vid}"


def vlan_device_name(pool: Pool, vid: int) -> str:
    """The VLAN device on the uplink: ``eno1.100`` (the iproute2 convention)."""
    return f"{pool.uplink}.{vid}"


def network_entry(spec: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    """(index, entry) of the spec's ``linux.namespaces`` network entry, or None."""
    linux = spec.get("linux")
    entries = linux.get("namespaces") if isinstance(linux, dict) else None
    if not isinstance(entries, list):
        return None
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and entry.get("type") == "network":
            return i, entry
    return None


def make_plan(spec: dict[str, Any], annotations: dict[str, str], overrides: dict[str, str],
              settings: NetworkSettings, *, container_id: str,
              namespace: str) -> NetworkPlan | None:
    """The plan for a shim-managed network, or None when the container joins (or shares) a
    namespace it was given and the shim configures nothing.

    ``overrides`` are the operator-allowed ``lxcri.proxmox.io/<key>`` annotations, keyed by
    ``<key>`` (``runtime.config.overrides``).
    """
    asked = [k for k in SELECTING if k in overrides]
    entry = network_entry(spec)
    if entry is None or entry[1].get("path"):
        if asked:
            where = (f"joins the network namespace {entry[1]['path']}" if entry is not None
                     else "shares the host's network namespace")
            raise InvalidArgument(f"annotation lxcri.proxmox.io/{asked[0]}: the container "
                                  f"{where}; a shim-managed network needs a new one")
        return None
    if "bridge" in overrides:
        raise InvalidArgument("annotation lxcri.proxmox.io/bridge: the pool names the bridge; "
                              "choose a pool with lxcri.proxmox.io/network")
    pool_name = overrides.get("network") or settings.default_pool
    if not pool_name:
        if asked or "dns" in overrides or "dns-search" in overrides:
            first = (asked or ["dns"])[0]
            raise InvalidArgument(f"annotation lxcri.proxmox.io/{first}: no pool chosen; set "
                                  "lxcri.proxmox.io/network or [network] default_pool")
        return None
    pool = settings.pools.get(pool_name)
    if pool is None:
        known = ", ".join(sorted(settings.pools)) or "none configured"
        raise InvalidArgument(f"annotation lxcri.proxmox.io/network: no pool {pool_name!r} "
                              f"in [network.pools] ({known})")
    key = group_key(container_id, annotations)
    vlan = _vlan(overrides, pool)
    if vlan is not None and pool.vlan_mode == "subinterface":
        for name in (vlan_bridge_name(pool, vlan), vlan_device_name(pool, vlan)):
            if len(name) > 15:  # IFNAMSIZ
                raise InvalidArgument(f"pool {pool.name!r}: VLAN {vlan} needs an interface "
                                      f"{name!r}, longer than Linux's 15 characters; use "
                                      "shorter bridge or uplink names")
    return NetworkPlan(
        key=key,
        namespace=namespace,
        pool=pool,
        netns_path=settings.netns_dir / netns_name(namespace, key),
        host_ifname=host_ifname(namespace, key),
        mac=stable_mac(namespace, key),
        mtu=_mtu(overrides, pool),
        vlan=vlan,
        requested=_requested(overrides, pool),
        nameservers=_list(overrides, "dns", pool.dns, address=True),
        search=_list(overrides, "dns-search", pool.dns_search),
        options=pool.dns_options,
        hostname=_hostname(spec, container_id),
        bridge_netns=settings.bridge_netns,
    )


def _vlan(overrides: dict[str, str], pool: Pool) -> int | None:
    if "vlan" not in overrides:
        return pool.vlan
    vid = vlan_id(overrides["vlan"], "annotation lxcri.proxmox.io/vlan")
    if pool.vlan is not None and vid != pool.vlan:
        # A pool is one subnet on one VLAN; another tag would put its addresses on a segment
        # whose other hosts use another subnet.
        raise InvalidArgument(f"annotation lxcri.proxmox.io/vlan: pool {pool.name!r} is on "
                              f"VLAN {pool.vlan}, not {vid}")
    return vid


def _mtu(overrides: dict[str, str], pool: Pool) -> int:
    raw = overrides.get("mtu")
    if raw is None:
        return pool.mtu
    if not raw.strip().isdigit() or not 68 <= int(raw) <= pool.mtu:
        # The container's MTU may not exceed the bridge's (proxmox-api.md section 4.5).
        raise InvalidArgument(f"annotation lxcri.proxmox.io/mtu: must be an integer from 68 to "
                              f"the pool's MTU {pool.mtu}, got {raw!r}")
    return int(raw)


def _requested(overrides: dict[str, str], pool: Pool) -> ipaddress.IPv4Interface | None:
    raw = overrides.get("ip", "auto").strip()
    if raw in ("", "auto"):
        return None
    try:
        iface = ipaddress.IPv4Interface(raw)
    except ValueError:
        raise InvalidArgument(f"annotation lxcri.proxmox.io/ip: {raw!r} is neither 'auto' nor "
                              "an IPv4 address in CIDR form (10.0.0.5/24)") from None
    if "/" in raw and iface.network != pool.subnet:
        raise InvalidArgument(f"annotation lxcri.proxmox.io/ip: {raw} is not in pool "
                              f"{pool.name!r} ({pool.subnet})")
    if not pool.usable(iface.ip):
        raise InvalidArgument(f"annotation lxcri.proxmox.io/ip: {iface.ip} is not a usable "
                              f"host address of pool {pool.name!r} ({pool.subnet}, gateway "
                              f"{pool.gateway})")
    return ipaddress.IPv4Interface(f"{iface.ip}/{pool.subnet.prefixlen}")


def _list(overrides: dict[str, str], key: str, default: tuple[str, ...],
          address: bool = False) -> tuple[str, ...]:
    if key not in overrides:
        return default
    items = tuple(v for v in re.split(r"[,\s]+", overrides[key]) if v)
    for item in items if address else ():
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise InvalidArgument(f"annotation lxcri.proxmox.io/{key}: {item!r} is not an IP "
                                  "address") from None
    return items


def _hostname(spec: dict[str, Any], container_id: str) -> str:
    name = spec.get("hostname")
    return name if isinstance(name, str) and name else container_id[:63]
