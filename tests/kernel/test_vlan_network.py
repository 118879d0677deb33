"""Shim-managed VLANs on Debian's stock kernel (kernel test host only): the network
provisioner puts containers on VLANs of a VLAN-aware bridge, as Proxmox does for ``tag=``.

Two containers on VLAN 10 talk; one on VLAN 20 (same subnet, same pool) does not, so only the
bridge's VLAN filtering separates them. The containers are LXC containers (``lxc-execute``)
that join the namespaces the provisioner made (``lxc.namespace.share.net``), the same way the
shim's LXC backend joins them. Everything lives in namespaces the test made.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.helpers import BRIDGE, IP, make_container, sh, unique

pytestmark = [pytest.mark.kernel, pytest.mark.pve9]

SUBNET = "10.253.1"


@pytest.fixture
def bridge_ns() -> Iterator[str]:
    name = unique("kvb")
    sh(IP, "netns", "add", name)
    yield name
    sh(IP, "netns", "del", name, check=False)


def settings(bridge_ns: str, state: Path, bridge: str) -> dict[str, Any]:
    return {"network": {"state_dir": str(state), "bridge_netns": f"/run/netns/{bridge_ns}",
                        "pools": {"trunk": {"bridge": bridge, "subnet": f"{SUBNET}.0/24",
                                            "range": f"{SUBNET}.10-{SUBNET}.20"}}}}


def config(cid: str, s: dict[str, Any], tmp: Path, **ann: str) -> Any:
    from runtime.types import CreateConfig

    spec = {"process": {"args": ["sh"]}, "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]},
            "annotations": {f"lxcri.proxmox.io/{k}": v
                            for k, v in {"network": "trunk", **ann}.items()}}
    return CreateConfig(id=cid, namespace="default", bundle=tmp, spec=spec,
                        state_dir=tmp / cid, settings=s)


def netns_of(cfg: Any) -> str:
    (entry,) = [n for n in cfg.spec["linux"]["namespaces"] if n["type"] == "network"]
    return str(entry["path"])


def lxc_ping(lxcpath: Path, netns: str, addr: str) -> str:
    """busybox ping's statistics line from an LXC container that joins ``netns``."""
    name = unique("vp")
    # AppArmor is active in the guest; LXC's default profile is not loaded there.
    cdir = make_container(lxcpath, name, ["/bin/true"],
                          extra=["lxc.apparmor.profile = unconfined"])
    text = (cdir / "config").read_text().replace("lxc.net.0.type = empty\n", "")
    (cdir / "config").write_text(text + f"lxc.namespace.share.net = {netns}\n")
    r = sh("lxc-execute", "-P", lxcpath, "-n", name, "--", "/bin/busybox", "ping", "-c", "2",
           "-W", "2", addr, check=False, timeout=60)
    # A failed start would look like an unanswered ping: insist on ping's own summary.
    stats = [line for line in r.stdout.splitlines() if "packets transmitted" in line]
    assert stats, f"ping did not run: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return stats[0]


def test_vlan_ports_on_a_vlan_aware_bridge(bridge_ns: str, lxcpath: Path,
                                           tmp_path: Path) -> None:
    from network.provisioner import NetworkProvisioner

    bridge = unique("kvbr")
    s = settings(bridge_ns, tmp_path / "net", bridge)
    c1, c2, c3 = (config(unique("v10a"), s, tmp_path, vlan="10", ip=f"{SUBNET}.11/24"),
                  config(unique("v10b"), s, tmp_path, vlan="10", ip=f"{SUBNET}.12/24"),
                  config(unique("v20"), s, tmp_path, vlan="20", ip=f"{SUBNET}.13/24"))
    prov = NetworkProvisioner(tmp_path / "net")

    async def prepare() -> list[Any]:
        return [await prov.prepare(c) for c in (c1, c2, c3)]

    async def release(cfgs: list[Any]) -> None:
        for c in cfgs:
            await prov.release(c)

    p1, p2, p3 = asyncio.run(prepare())
    try:
        # The project created the bridge and made it VLAN-aware.
        flt = sh(IP, "netns", "exec", bridge_ns, "cat",
                 f"/sys/class/net/{bridge}/bridge/vlan_filtering").stdout.strip()
        assert flt == "1"
        vlans = json.loads(sh(IP, "netns", "exec", bridge_ns, BRIDGE, "-j", "vlan", "show"
                              ).stdout)
        ports = {e["ifname"]: e["vlans"] for e in vlans if e["ifname"] != bridge}
        # Each container port is an access port: its VLAN only, PVID and untagged (tag=).
        assert sorted(v["vlan"] for vs in ports.values() for v in vs) == [10, 10, 20]
        for vs in ports.values():
            assert set(vs[0].get("flags", [])) == {"PVID", "Egress Untagged"}
        answered = "2 packets transmitted, 2 packets received"
        unanswered = "2 packets transmitted, 0 packets received"
        assert lxc_ping(lxcpath, netns_of(p1), f"{SUBNET}.12").startswith(answered), \
            "VLAN 10 to VLAN 10 must talk"
        assert lxc_ping(lxcpath, netns_of(p3), f"{SUBNET}.12").startswith(unanswered), \
            "VLAN 20 must not reach VLAN 10"
        assert lxc_ping(lxcpath, netns_of(p1), f"{SUBNET}.13").startswith(unanswered)
    finally:
        asyncio.run(release([p1, p2, p3]))
    for p in (p1, p2, p3):
        assert not Path(netns_of(p)).exists()
    links = json.loads(sh(IP, "-n", bridge_ns, "-j", "link", "show").stdout)
    assert sorted(link["ifname"] for link in links) == sorted(["lo", bridge])


def test_vlan_on_a_foreign_bridge_that_is_not_vlan_aware_is_refused(bridge_ns: str,
                                                                    tmp_path: Path) -> None:
    from network.provisioner import NetworkProvisioner
    from runtime.errdefs import FailedPrecondition

    bridge = unique("kvfr")
    sh(IP, "-n", bridge_ns, "link", "add", bridge, "type", "bridge")
    s = settings(bridge_ns, tmp_path / "net", bridge)
    cfg = config(unique("vf"), s, tmp_path, vlan="10")
    with pytest.raises(FailedPrecondition, match="is not VLAN-aware and was not created"):
        asyncio.run(NetworkProvisioner(tmp_path / "net").prepare(cfg))
    flt = sh(IP, "netns", "exec", bridge_ns, "cat",
             f"/sys/class/net/{bridge}/bridge/vlan_filtering").stdout.strip()
    assert flt == "0"  # untouched
    links = json.loads(sh(IP, "-n", bridge_ns, "-j", "link", "show").stdout)
    assert sorted(link["ifname"] for link in links) == sorted(["lo", bridge])


def ns_ping(netns_path: str, addr: str) -> str:
    """busybox ping's statistics line from inside the namespace at ``netns_path``."""
    r = sh(IP, "netns", "exec", Path(netns_path).name, "/bin/busybox", "ping", "-c", "2", "-W",
           "2", addr, check=False, timeout=60)
    stats = [line for line in r.stdout.splitlines() if "packets transmitted" in line]
    assert stats, f"ping did not run: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return stats[0]


def test_vlan_subinterface_wiring_on_a_bridge_that_is_not_vlan_aware(
        bridge_ns: str, netns: Any, tmp_path: Path) -> None:
    """Proxmox's wiring for ``tag=`` on a plain bridge: ``<bridge>v<N>`` over ``<uplink>.<N>``.
    A namespace standing in for the tagged network behind the uplink answers on VLAN 10 only."""
    from network.provisioner import NetworkProvisioner

    switch = netns("kvs")
    bridge, up = unique("kvp"), unique("up")
    sh(IP, "-n", bridge_ns, "link", "add", bridge, "type", "bridge")
    sh(IP, "-n", bridge_ns, "link", "add", up, "type", "veth", "peer", "name", "trunk",
       "netns", switch)
    sh(IP, "-n", bridge_ns, "link", "set", up, "master", bridge, "up")
    sh(IP, "-n", bridge_ns, "link", "set", bridge, "up")
    sh(IP, "-n", switch, "link", "set", "trunk", "up")
    for vid in (10, 20):
        sh(IP, "-n", switch, "link", "add", "link", "trunk", "name", f"trunk.{vid}", "type",
           "vlan", "id", str(vid))
        sh(IP, "-n", switch, "link", "set", f"trunk.{vid}", "up")
    sh(IP, "-n", switch, "addr", "add", f"{SUBNET}.1/24", "dev", "trunk.10")
    s = {"network": {"state_dir": str(tmp_path / "net"),
                     "bridge_netns": f"/run/netns/{bridge_ns}",
                     "pools": {"sub": {"bridge": bridge, "subnet": f"{SUBNET}.0/24",
                                       "range": f"{SUBNET}.10-{SUBNET}.20",
                                       "vlan_mode": "subinterface", "uplink": up}}}}
    c10 = config(unique("s10"), s, tmp_path, network="sub", vlan="10")
    c20 = config(unique("s20"), s, tmp_path, network="sub", vlan="20")
    prov = NetworkProvisioner(tmp_path / "net")

    async def prepare() -> list[Any]:
        return [await prov.prepare(c) for c in (c10, c20)]

    async def release(cfgs: list[Any]) -> None:
        for c in cfgs:
            await prov.release(c)

    p10, p20 = asyncio.run(prepare())
    try:
        links = {link["ifname"]: link for link in json.loads(
            sh(IP, "-n", bridge_ns, "-d", "-j", "link", "show").stdout)}
        for vid in (10, 20):
            assert links[f"{up}.{vid}"]["linkinfo"]["info_data"]["id"] == vid
            assert links[f"{up}.{vid}"]["master"] == f"{bridge}v{vid}"
        assert links[up]["master"] == bridge  # the plain bridge keeps its port, untouched
        answered = "2 packets transmitted, 2 packets received"
        unanswered = "2 packets transmitted, 0 packets received"
        assert ns_ping(netns_of(p10), f"{SUBNET}.1").startswith(answered)
        assert ns_ping(netns_of(p20), f"{SUBNET}.1").startswith(unanswered)
    finally:
        asyncio.run(release([p10, p20]))
    left = {link["ifname"] for link in json.loads(
        sh(IP, "-n", bridge_ns, "-j", "link", "show").stdout)}
    # The per-VLAN bridges and VLAN devices stay (shared, like Proxmox's vmbr0vN); the
    # containers' veths are gone.
    assert left == {"lo", bridge, up, f"{up}.10", f"{up}.20", f"{bridge}v10", f"{bridge}v20"}
