"""Which containers get a shim-managed network, and with what (pure plan derivation)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from network.config import parse
from network.plan import host_ifname, make_plan, netns_name, stable_mac
from runtime.errdefs import InvalidArgument

SETTINGS = parse({"network": {"pools": {
    "lan": {"bridge": "vmbr0", "subnet": "10.88.0.0/24", "gateway": "10.88.0.1",
            "dns": ["10.88.0.1"], "dns_search": ["lan.example"], "mtu": 1450},
    "v100": {"bridge": "vmbr1", "subnet": "10.89.0.0/24", "vlan": 100},
}}})
WITH_DEFAULT = parse({"network": {"default_pool": "lan", "pools": {
    "lan": {"bridge": "vmbr0", "subnet": "10.88.0.0/24"}}}})


NEW_NETNS: dict[str, Any] = {"type": "network"}


def spec(netns: dict[str, Any] | None = NEW_NETNS, **extra: Any) -> dict[str, Any]:
    """A spec with ``netns`` as its network namespace entry (None: the host's network)."""
    namespaces = [{"type": "pid"}, {"type": "mount"}] + ([dict(netns)] if netns else [])
    return {"linux": {"namespaces": namespaces}, **extra}


def plan(s: dict[str, Any], overrides: dict[str, str], settings: Any = SETTINGS,
         annotations: dict[str, str] | None = None) -> Any:
    return make_plan(s, annotations or {}, overrides, settings, container_id="c1",
                     namespace="default")


def test_no_annotation_and_no_default_pool_leaves_the_network_alone() -> None:
    assert plan(spec(), {}) is None


def test_a_joined_namespace_is_left_alone_even_with_a_default_pool() -> None:
    assert plan(spec({"type": "network", "path": "/run/netns/cni-1"}), {}, WITH_DEFAULT) is None


def test_host_network_is_left_alone() -> None:
    assert plan(spec(None), {}, WITH_DEFAULT) is None


def test_asking_for_a_pool_on_a_joined_namespace_is_an_error() -> None:
    with pytest.raises(InvalidArgument, match=r"lxcri.proxmox.io/network: the container joins "
                                              r"the network namespace /run/netns/x"):
        plan(spec({"type": "network", "path": "/run/netns/x"}), {"network": "lan"})


def test_asking_for_an_ip_on_host_network_is_an_error() -> None:
    with pytest.raises(InvalidArgument, match=r"lxcri.proxmox.io/ip: .*host's network"):
        plan(spec(None), {"ip": "auto"}, WITH_DEFAULT)


def test_annotation_selects_the_pool() -> None:
    p = plan(spec(hostname="web"), {"network": "lan"})
    assert p.pool.name == "lan" and p.pool.bridge == "vmbr0" and p.vlan is None
    assert p.requested is None and p.mtu == 1450 and p.hostname == "web"
    assert p.nameservers == ("10.88.0.1",) and p.search == ("lan.example",)
    assert p.netns_path == Path("/run/netns/lxcri-default-c1")
    assert p.peer_ifname == "eth0"


def test_default_pool_applies_to_a_new_namespace() -> None:
    assert plan(spec(), {}, WITH_DEFAULT).pool.name == "lan"


def test_unknown_pool_names_the_known_ones() -> None:
    with pytest.raises(InvalidArgument, match=r"no pool 'wan' in \[network.pools\] \(lan, v100\)"):
        plan(spec(), {"network": "wan"})


def test_requested_address() -> None:
    p = plan(spec(), {"network": "lan", "ip": "10.88.0.50/24"})
    assert p.requested == ipaddress.IPv4Interface("10.88.0.50/24")


@pytest.mark.parametrize("ip,message", [
    ("10.99.0.5/24", r"not in pool 'lan' \(10.88.0.0/24\)"),
    ("10.88.0.1/24", r"10.88.0.1 is not a usable host address"),
    ("10.88.0.255/24", r"not a usable host address"),
    ("ten", r"neither 'auto' nor an IPv4 address"),
])
def test_bad_requested_address(ip: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        plan(spec(), {"network": "lan", "ip": ip})


def test_vlan_from_the_pool_and_from_an_annotation() -> None:
    assert plan(spec(), {"network": "v100"}).vlan == 100
    assert plan(spec(), {"network": "lan", "vlan": "7"}).vlan == 7
    with pytest.raises(InvalidArgument, match=r"pool 'v100' is on VLAN 100, not 7"):
        plan(spec(), {"network": "v100", "vlan": "7"})
    with pytest.raises(InvalidArgument, match=r"VLAN id must be an integer from 1 to 4094"):
        plan(spec(), {"network": "lan", "vlan": "0"})


def test_dns_annotations_override_the_pool() -> None:
    p = plan(spec(), {"network": "lan", "dns": "1.1.1.1, 9.9.9.9", "dns-search": "a.example"})
    assert p.nameservers == ("1.1.1.1", "9.9.9.9") and p.search == ("a.example",)
    with pytest.raises(InvalidArgument, match=r"lxcri.proxmox.io/dns: 'x' is not an IP"):
        plan(spec(), {"network": "lan", "dns": "x"})


def test_dns_without_a_pool_is_an_error() -> None:
    with pytest.raises(InvalidArgument, match=r"lxcri.proxmox.io/dns: no pool chosen"):
        plan(spec(), {"dns": "1.1.1.1"})


def test_mtu_may_not_exceed_the_pool() -> None:
    assert plan(spec(), {"network": "lan", "mtu": "1400"}).mtu == 1400
    with pytest.raises(InvalidArgument, match=r"pool's MTU 1450"):
        plan(spec(), {"network": "lan", "mtu": "9000"})


def test_bridge_annotation_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"lxcri.proxmox.io/bridge: the pool names"):
        plan(spec(), {"network": "lan", "bridge": "vmbr9"})


def test_a_pod_shares_one_network_keyed_by_the_group() -> None:
    ann = {"io.containerd.runc.v2.group": "pod-1"}
    a = make_plan(spec(), ann, {"network": "lan"}, SETTINGS, container_id="a", namespace="k8s")
    b = make_plan(spec(), ann, {"network": "lan"}, SETTINGS, container_id="b", namespace="k8s")
    assert a is not None and b is not None
    assert a.key == b.key == "pod-1"
    assert (a.netns_path, a.host_ifname, a.mac) == (b.netns_path, b.host_ifname, b.mac)


def test_names_are_stable_short_and_distinct() -> None:
    assert host_ifname("default", "c1") == host_ifname("default", "c1")
    assert len(host_ifname("default", "x" * 64)) == 15
    assert host_ifname("default", "c1") != host_ifname("other", "c1")
    assert netns_name("default", "c1") == "lxcri-default-c1"
    assert netns_name("default", "a/b").startswith("lxcri-") and "/" not in netns_name(
        "default", "a/b")


def test_mac_is_locally_administered_unicast_and_stable() -> None:
    mac = stable_mac("default", "c1")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01
    assert mac == stable_mac("default", "c1") != stable_mac("default", "c2")


def test_subinterface_names_must_fit_ifnamsiz() -> None:
    s = parse({"network": {"pools": {"p": {
        "bridge": "bridge-longish", "subnet": "10.88.0.0/24", "vlan_mode": "subinterface",
        "uplink": "eno1"}}}})
    with pytest.raises(InvalidArgument, match=r"needs an interface 'bridge-longishv100', longer"):
        plan(spec(), {"network": "p", "vlan": "100"}, s)
    assert plan(spec(), {"network": "p"}, s).vlan is None  # no VLAN: the bridge itself
