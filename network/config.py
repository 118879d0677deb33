"""The ``[network]`` section of ``/etc/proxmox-lxcri/config.toml``, parsed and validated.

Pure: it takes the raw TOML mapping (``runtime.config.load``) and returns frozen dataclasses.
Every error names the key, e.g. ``[network.pools.lan] subnet: ...``. The keys are documented in
docs/configuration.md (section ``[network]``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errdefs import InvalidArgument

#: Linux interface names: at most IFNAMSIZ - 1 = 15 bytes, no '/', ':' or whitespace
#: (net/core/dev.c dev_valid_name).
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
POOL_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_MTU = 1500
DEFAULT_NETNS_DIR = Path("/run/netns")  # where `ip netns` looks (iproute2 NETNS_RUN_DIR)
VLAN_MODES = ("bridge", "subinterface")


@dataclass(frozen=True)
class Pool:
    """One address pool: a subnet on a bridge, optionally on a VLAN."""

    name: str
    bridge: str
    subnet: ipaddress.IPv4Network
    first: ipaddress.IPv4Address
    last: ipaddress.IPv4Address
    gateway: ipaddress.IPv4Address | None = None
    vlan: int | None = None
    mtu: int = DEFAULT_MTU
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    #: Address the bridge gets when the project creates it (default: the gateway).
    bridge_address: ipaddress.IPv4Interface | None = None
    #: How a VLAN is wired: "bridge" = an access port of the VLAN-aware ``bridge``;
    #: "subinterface" = Proxmox's wiring for bridges that are not VLAN-aware: a bridge
    #: ``<bridge>v<vid>`` whose port is the VLAN device ``<uplink>.<vid>``.
    vlan_mode: str = "bridge"
    uplink: str = ""

    def usable(self, addr: ipaddress.IPv4Address) -> bool:
        """In the subnet, not its network or broadcast address and not the gateway."""
        return (addr in self.subnet and addr not in (self.subnet.network_address,
                                                     self.subnet.broadcast_address)
                and addr != self.gateway)


@dataclass(frozen=True)
class NetworkSettings:
    pools: dict[str, Pool] = field(default_factory=dict)
    #: Pool for containers that ask for none; "" = shim-managed networking only on request.
    default_pool: str = ""
    #: Leases and network records; None = ``<state root>/network`` (the composition root's).
    state_dir: Path | None = None
    netns_dir: Path = DEFAULT_NETNS_DIR
    #: Namespace holding the bridges and the host ends of the veths; "" = the shim's own.
    bridge_netns: str = ""
    #: Bridges the project may modify although it did not create them.
    owned_bridges: tuple[str, ...] = ()


def parse(raw: dict[str, Any]) -> NetworkSettings:
    """The ``[network]`` table of the raw configuration (missing = defaults)."""
    section = raw.get("network", {})
    if not isinstance(section, dict):
        raise InvalidArgument("configuration: [network] must be a table")
    known = {"pools", "default_pool", "state_dir", "netns_dir", "bridge_netns",
             "owned_bridges", "mtu"}
    _no_unknown(section, known, "[network]")
    mtu = _mtu(section.get("mtu", DEFAULT_MTU), "[network] mtu")
    pools_raw = section.get("pools", {})
    if not isinstance(pools_raw, dict):
        raise InvalidArgument("configuration: [network.pools] must be a table of pools")
    pools = {name: parse_pool(name, value, mtu) for name, value in pools_raw.items()}
    default_pool = _str(section.get("default_pool", ""), "[network] default_pool")
    if default_pool and default_pool not in pools:
        raise InvalidArgument(f"configuration: [network] default_pool: no pool {default_pool!r}"
                              " in [network.pools]")
    owned = section.get("owned_bridges", [])
    if not isinstance(owned, list) or not all(isinstance(b, str) and IFNAME_RE.match(b)
                                              for b in owned):
        raise InvalidArgument("configuration: [network] owned_bridges: must be a list of "
                              "interface names")
    state_dir = _str(section.get("state_dir", ""), "[network] state_dir")
    netns_dir = _str(section.get("netns_dir", str(DEFAULT_NETNS_DIR)), "[network] netns_dir")
    bridge_netns = _str(section.get("bridge_netns", ""), "[network] bridge_netns")
    for key, value in (("state_dir", state_dir), ("netns_dir", netns_dir),
                       ("bridge_netns", bridge_netns)):
        if value and not value.startswith("/"):
            raise InvalidArgument(f"configuration: [network] {key}: must be an absolute path")
    return NetworkSettings(pools=pools, default_pool=default_pool,
                           state_dir=Path(state_dir) if state_dir else None,
                           netns_dir=Path(netns_dir), bridge_netns=bridge_netns,
                           owned_bridges=tuple(owned))


def parse_pool(name: str, raw: Any, default_mtu: int = DEFAULT_MTU) -> Pool:
    where = f"[network.pools.{name}]"
    if not POOL_NAME_RE.match(name):
        raise InvalidArgument(f"configuration: {where}: pool names use letters, digits, "
                              "'.', '_' and '-' only")
    if not isinstance(raw, dict):
        raise InvalidArgument(f"configuration: {where} must be a table")
    _no_unknown(raw, {"bridge", "subnet", "gateway", "range", "vlan", "mtu", "dns",
                      "dns_search", "dns_options", "bridge_address", "vlan_mode", "uplink"},
                where)
    bridge = _str(raw.get("bridge", ""), f"{where} bridge")
    if not IFNAME_RE.match(bridge):
        raise InvalidArgument(f"configuration: {where} bridge: must be an interface name "
                              "(1-15 characters)")
    subnet = _network(raw.get("subnet"), f"{where} subnet")
    gateway = _address(raw["gateway"], f"{where} gateway") if "gateway" in raw else None
    if gateway is not None and gateway not in subnet:
        raise InvalidArgument(f"configuration: {where} gateway: {gateway} is not in {subnet}")
    first, last = _range(raw.get("range"), subnet, f"{where} range")
    vlan = vlan_id(raw["vlan"], f"{where} vlan") if "vlan" in raw else None
    bridge_address = None
    if "bridge_address" in raw:
        bridge_address = _interface(raw["bridge_address"], f"{where} bridge_address")
    elif gateway is not None:
        bridge_address = ipaddress.IPv4Interface(f"{gateway}/{subnet.prefixlen}")
    vlan_mode = _str(raw.get("vlan_mode", "bridge"), f"{where} vlan_mode")
    if vlan_mode not in VLAN_MODES:
        raise InvalidArgument(f"configuration: {where} vlan_mode: must be one of "
                              f"{', '.join(VLAN_MODES)}")
    uplink = _str(raw.get("uplink", ""), f"{where} uplink")
    if vlan_mode == "subinterface" and not IFNAME_RE.match(uplink):
        raise InvalidArgument(f"configuration: {where} uplink: vlan_mode \"subinterface\" needs "
                              "the interface that carries the tagged frames (e.g. \"eno1\")")
    return Pool(name=name, bridge=bridge, subnet=subnet, first=first, last=last,
                vlan_mode=vlan_mode, uplink=uplink,
                gateway=gateway, vlan=vlan, mtu=_mtu(raw.get("mtu", default_mtu), f"{where} mtu"),
                dns=_addresses(raw.get("dns", []), f"{where} dns"),
                dns_search=_words(raw.get("dns_search", []), f"{where} dns_search"),
                dns_options=_words(raw.get("dns_options", []), f"{where} dns_options"),
                bridge_address=bridge_address)


# -- small validators (shared with network.plan for annotations) ------------------------------


def vlan_id(value: Any, where: str) -> int:
    # 802.1Q VIDs 0 and 4095 are reserved (IEEE 802.1Q table 9-2).
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4094:
        raise InvalidArgument(f"{where}: VLAN id must be an integer from 1 to 4094, "
                              f"got {value!r}")
    return value


def _mtu(value: Any, where: str) -> int:
    # 68 is IPv4's minimum MTU (RFC 791); 65535 the largest a veth accepts (ETH_MAX_MTU).
    if not isinstance(value, int) or isinstance(value, bool) or not 68 <= value <= 65535:
        raise InvalidArgument(f"{where}: must be an integer from 68 to 65535")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"configuration: {where}: must be a string")
    return value


def _network(value: Any, where: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(_str(value, where), strict=True)
    except ValueError as exc:
        raise InvalidArgument(f"configuration: {where}: {exc}") from None
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 30:
        raise InvalidArgument(f"configuration: {where}: must be an IPv4 subnet of /30 or larger")
    return net


def _address(value: Any, where: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(_str(value, where))
    except ValueError as exc:
        raise InvalidArgument(f"configuration: {where}: {exc}") from None


def _interface(value: Any, where: str) -> ipaddress.IPv4Interface:
    try:
        return ipaddress.IPv4Interface(_str(value, where))
    except ValueError as exc:
        raise InvalidArgument(f"configuration: {where}: {exc}") from None


def _range(value: Any, subnet: ipaddress.IPv4Network,
           where: str) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    if value is None:
        return subnet.network_address + 1, subnet.broadcast_address - 1
    text = _str(value, where)
    lo, sep, hi = text.partition("-")
    if not sep:
        raise InvalidArgument(f"configuration: {where}: must be FIRST-LAST, e.g. "
                              "10.0.0.10-10.0.0.200")
    first, last = _address(lo.strip(), where), _address(hi.strip(), where)
    if first not in subnet or last not in subnet or first > last:
        raise InvalidArgument(f"configuration: {where}: {text} is not an ascending range "
                              f"inside {subnet}")
    return first, last


def _addresses(value: Any, where: str) -> tuple[str, ...]:
    items = _words(value, where)
    for item in items:
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise InvalidArgument(f"configuration: {where}: {item!r} is not an IP address"
                                  ) from None
    return items


def _words(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v and not any(
            c.isspace() for c in v) for v in value):
        raise InvalidArgument(f"configuration: {where}: must be a list of non-empty strings "
                              "without spaces")
    return tuple(value)


def _no_unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise InvalidArgument(f"configuration: {where}: unknown key(s) {', '.join(unknown)}")
