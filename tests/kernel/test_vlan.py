"""802.1Q VLANs: a sub-interface and a VLAN-filtering bridge (kernel host only)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.kernel.helpers import BRIDGE, BUSYBOX, IP, sh

pytestmark = [pytest.mark.kernel, pytest.mark.pve9]


def test_vlan_subinterface(netns: Callable[[str], str]) -> None:
    ns = netns("kv")
    sh(IP, "-n", ns, "link", "add", "dummy0", "type", "dummy")
    sh(IP, "-n", ns, "link", "add", "link", "dummy0", "name", "dummy0.100", "type", "vlan",
       "id", "100")
    sh(IP, "-n", ns, "link", "set", "dummy0", "up")
    sh(IP, "-n", ns, "link", "set", "dummy0.100", "up")
    (link,) = json.loads(sh(IP, "-n", ns, "-d", "-j", "link", "show", "dummy0.100").stdout)
    info = link["linkinfo"]
    assert info["info_kind"] == "vlan"
    assert info["info_data"]["protocol"] == "802.1Q"
    assert info["info_data"]["id"] == 100


def _ping(ns: str, addr: str, wait: int = 3) -> bool:
    # One echo: the first one also covers ARP resolution on a fresh link.
    return sh(IP, "netns", "exec", ns, BUSYBOX, "ping", "-c", "1", "-W", str(wait), addr,
              check=False, timeout=30).returncode == 0


def test_vlan_filtering_bridge(netns: Callable[[str], str]) -> None:
    """Untagged port (PVID 10) and tagged port (VID 10) talk; moving one to VID 20 cuts them."""
    br, a, b = netns("kb"), netns("ka"), netns("kc")
    sh(IP, "-n", br, "link", "add", "br0", "type", "bridge", "vlan_filtering", "1")
    # `ip netns exec` remounts /sys for the namespace, so this is br0's own knob.
    out = sh(IP, "netns", "exec", br, "cat", "/sys/class/net/br0/bridge/vlan_filtering").stdout
    assert out.strip() == "1"
    for port, peer_ns in (("p-a", a), ("p-b", b)):
        sh(IP, "-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0",
           "netns", peer_ns)
        sh(IP, "-n", br, "link", "set", port, "master", "br0", "up")
        sh(IP, "netns", "exec", br, BRIDGE, "vlan", "del", "dev", port, "vid", "1")
        sh(IP, "-n", peer_ns, "link", "set", "eth0", "up")
    sh(IP, "-n", br, "link", "set", "br0", "up")
    # Port A: access port, untagged on VLAN 10. Port B: trunk, VLAN 10 tagged.
    sh(IP, "netns", "exec", br, BRIDGE, "vlan", "add", "dev", "p-a", "vid", "10", "pvid",
       "untagged")
    sh(IP, "netns", "exec", br, BRIDGE, "vlan", "add", "dev", "p-b", "vid", "10")
    sh(IP, "-n", a, "addr", "add", "10.77.10.1/24", "dev", "eth0")
    sh(IP, "-n", b, "link", "add", "link", "eth0", "name", "eth0.10", "type", "vlan", "id", "10")
    sh(IP, "-n", b, "addr", "add", "10.77.10.2/24", "dev", "eth0.10")
    sh(IP, "-n", b, "link", "set", "eth0.10", "up")

    vlans = json.loads(sh(IP, "netns", "exec", br, BRIDGE, "-j", "vlan", "show").stdout)
    by_port = {e["ifname"]: {v["vlan"] for v in e["vlans"]} for e in vlans}
    assert by_port["p-a"] == {10} and by_port["p-b"] == {10}

    assert _ping(a, "10.77.10.2"), "untagged and tagged port on VLAN 10 must talk"

    sh(IP, "netns", "exec", br, BRIDGE, "vlan", "del", "dev", "p-b", "vid", "10")
    sh(IP, "netns", "exec", br, BRIDGE, "vlan", "add", "dev", "p-b", "vid", "20")
    assert not _ping(a, "10.77.10.2", wait=1), "VLAN 10 and VLAN 20 must not talk"

    # And back: filtering, not a broken link, stopped the traffic.
    sh(IP, "netns", "exec", br, BRIDGE, "vlan", "add", "dev", "p-b", "vid", "10")
    assert _ping(a, "10.77.10.2")
