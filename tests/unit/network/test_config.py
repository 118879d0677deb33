"""The [network] section: what an operator writes, and the errors that name the key."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from network.config import parse
from runtime.errdefs import InvalidArgument


def cfg(**network: Any) -> dict[str, Any]:
    return {"network": network}


POOL = {"bridge": "vmbr0", "subnet": "10.88.0.0/24", "gateway": "10.88.0.1"}


def test_missing_section_means_no_pools_and_defaults() -> None:
    s = parse({})
    assert s.pools == {} and s.default_pool == "" and s.state_dir is None
    assert s.netns_dir == Path("/run/netns") and s.bridge_netns == ""


def test_a_full_pool() -> None:
    s = parse(cfg(default_pool="lan", mtu=9000, owned_bridges=["lxcbr0"], pools={"lan": {
        **POOL, "vlan": 100, "range": "10.88.0.10-10.88.0.20", "dns": ["10.88.0.1"],
        "dns_search": ["lan.example"], "dns_options": ["ndots:1"], "mtu": 1400}}))
    p = s.pools["lan"]
    assert p.bridge == "vmbr0" and p.vlan == 100 and p.mtu == 1400
    assert (p.first, p.last) == (ipaddress.IPv4Address("10.88.0.10"),
                                 ipaddress.IPv4Address("10.88.0.20"))
    assert p.gateway == ipaddress.IPv4Address("10.88.0.1")
    assert p.bridge_address == ipaddress.IPv4Interface("10.88.0.1/24")
    assert p.dns == ("10.88.0.1",) and p.dns_search == ("lan.example",)
    assert s.default_pool == "lan" and s.owned_bridges == ("lxcbr0",)


def test_pool_mtu_defaults_to_the_section_mtu() -> None:
    assert parse(cfg(mtu=9000, pools={"a": POOL})).pools["a"].mtu == 9000


def test_default_range_is_the_whole_subnet_minus_network_and_broadcast() -> None:
    p = parse(cfg(pools={"a": POOL})).pools["a"]
    assert (str(p.first), str(p.last)) == ("10.88.0.1", "10.88.0.254")
    assert not p.usable(ipaddress.IPv4Address("10.88.0.1"))  # the gateway
    assert p.usable(ipaddress.IPv4Address("10.88.0.2"))


@pytest.mark.parametrize("pool,message", [
    ({**POOL, "subnet": "10.88.0.1/24"}, r"\[network.pools.p\] subnet: .*host bits set"),
    ({**POOL, "subnet": "fd00::/64"}, r"subnet: must be an IPv4 subnet"),
    ({**POOL, "gateway": "10.99.0.1"}, r"gateway: 10.99.0.1 is not in 10.88.0.0/24"),
    ({**POOL, "range": "10.88.0.20-10.88.0.10"}, r"range: .* not an ascending range"),
    ({**POOL, "range": "10.88.0.20"}, r"range: must be FIRST-LAST"),
    ({**POOL, "vlan": 4095}, r"vlan: VLAN id must be an integer from 1 to 4094"),
    ({**POOL, "bridge": "a-very-long-bridge-name"}, r"bridge: must be an interface name"),
    ({**POOL, "dns": ["dns.example"]}, r"dns: 'dns.example' is not an IP address"),
    ({**POOL, "mtu": 10}, r"mtu: must be an integer from 68"),
    ({**POOL, "colour": "red"}, r"\[network.pools.p\]: unknown key\(s\) colour"),
    ({"subnet": "10.88.0.0/24"}, r"bridge: must be an interface name"),
])
def test_bad_pool_is_an_error_naming_the_key(pool: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse(cfg(pools={"p": pool}))


def test_default_pool_must_exist() -> None:
    with pytest.raises(InvalidArgument, match=r"default_pool: no pool 'lan'"):
        parse(cfg(default_pool="lan"))


def test_relative_paths_are_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"\[network\] bridge_netns: must be an absolute"):
        parse(cfg(bridge_netns="br"))


def test_unknown_section_key_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"\[network\]: unknown key\(s\) pool\b"):
        parse(cfg(pool={}))


def test_vlan_mode_subinterface_needs_an_uplink() -> None:
    p = parse(cfg(pools={"p": {**POOL, "vlan_mode": "subinterface", "uplink": "eno1"}}))
    assert (p.pools["p"].vlan_mode, p.pools["p"].uplink) == ("subinterface", "eno1")
    assert parse(cfg(pools={"p": POOL})).pools["p"].vlan_mode == "bridge"
    with pytest.raises(InvalidArgument, match=r"uplink: vlan_mode \"subinterface\" needs"):
        parse(cfg(pools={"p": {**POOL, "vlan_mode": "subinterface"}}))
    with pytest.raises(InvalidArgument, match=r"vlan_mode: must be one of bridge, subinterface"):
        parse(cfg(pools={"p": {**POOL, "vlan_mode": "ovs"}}))
