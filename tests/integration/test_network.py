"""Shim-managed networks with real namespaces, bridges and veths (no containerd).

The network provisioner is driven directly, as the supervisor drives it; ``busybox ping`` runs
inside the namespaces it made (``nsenter --net``). Every test gets its own bridge namespace
(``lxt-<uid>``) holding its bridges, so traffic only ever flows between namespaces and bridges
the test created, and removing that namespace removes everything in it even when a test fails.
The end-to-end tests through containerd and LXC are in test_network_containerd.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from network import netns as nsmod
from network.ipam import Ipam
from network.plan import host_ifname, netns_name, stable_mac
from network.provisioner import NetworkProvisioner
from network.stats import interface_stats
from runtime.errdefs import AlreadyExists, FailedPrecondition, Unavailable
from runtime.types import CreateConfig

pytestmark = pytest.mark.integration

SUBNET_A, SUBNET_B = "10.251.1", "10.251.2"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and r.returncode:
        raise AssertionError(f"{argv} rc={r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def vlan_capable() -> bool:
    """True when this kernel has 802.1Q (environment.md: this machine's has not)."""
    ns = f"lxt-probe-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    try:
        return sh("ip", "-n", ns, "link", "add", "b0", "type", "bridge", "vlan_filtering", "1",
                  check=False).returncode == 0
    finally:
        sh("ip", "netns", "del", ns, check=False)


@dataclass
class Topology:
    uid: str
    tmp: Path
    bridge_ns: str
    settings: dict[str, Any]
    made: list[CreateConfig] = field(default_factory=list)

    @property
    def bridge_ns_path(self) -> str:
        return f"/run/netns/{self.bridge_ns}"

    @property
    def state_dir(self) -> Path:
        return self.tmp / "netstate"

    def bridge(self, pool: str) -> str:
        return str(self.settings["network"]["pools"][pool]["bridge"])

    def config(self, name: str, **annotations: str) -> CreateConfig:
        cid = f"{name}-{self.uid}"
        spec = {"process": {"args": ["sh"]}, "root": {"path": "rootfs"}, "hostname": name,
                "linux": {"namespaces": [{"type": "pid"}, {"type": "network"},
                                         {"type": "mount"}]},
                "annotations": {f"lxcri.proxmox.io/{k}": v for k, v in annotations.items()}}
        cfg = CreateConfig(id=cid, namespace="default", bundle=self.tmp, spec=spec,
                           state_dir=self.tmp / "containers" / cid, settings=self.settings)
        self.made.append(cfg)
        return cfg

    def netns_path(self, cfg: CreateConfig) -> Path:
        return Path("/run/netns") / netns_name(cfg.namespace, cfg.id)

    def veth(self, cfg: CreateConfig) -> str:
        return host_ifname(cfg.namespace, cfg.id)

    def bridge_links(self) -> dict[str, dict[str, Any]]:
        out = json.loads(sh("ip", "-n", self.bridge_ns, "-d", "-j", "link", "show").stdout)
        return {link["ifname"]: link for link in out}

    def leases(self, pool: str) -> dict[str, str]:
        return Ipam(self.state_dir).leases(pool)

    def leftovers(self, cfg: CreateConfig) -> list[str]:
        """What of ``cfg``'s network still exists (must be nothing after release)."""
        out = []
        if os.path.lexists(self.netns_path(cfg)):
            out.append(f"namespace {self.netns_path(cfg)}")
        if self.veth(cfg) in self.bridge_links():
            out.append(f"veth {self.veth(cfg)}")
        for pool in self.settings["network"]["pools"]:
            owners = set(self.leases(pool).values())
            if f"default/{cfg.id}" in owners:
                out.append(f"lease in pool {pool}")
        if (cfg.state_dir / "network.json").exists():
            out.append("network.json")
        return out


def ping(ns: Path | str, addr: str, count: int = 2) -> bool:
    return sh("nsenter", f"--net={ns}", "busybox", "ping", "-c", str(count), "-W", "2", addr,
              check=False).returncode == 0


def stable_view(link: dict[str, Any]) -> dict[str, Any]:
    # Carrier state is left out: a bridge has no carrier without ports (the kernel's doing).
    keep = ("ifindex", "mtu", "address", "master")
    data = link.get("linkinfo", {}).get("info_data", {})
    flags = sorted(set(link.get("flags", [])) - {"NO-CARRIER", "LOWER_UP"})
    return {**{k: link.get(k) for k in keep}, "flags": flags,
            "vlan_filtering": data.get("vlan_filtering")}


@pytest.fixture
def topo(tmp_path: Path) -> Iterator[Topology]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    uid = uuid.uuid4().hex[:6]
    t = Topology(uid=uid, tmp=tmp_path, bridge_ns=f"lxt-{uid}", settings={"network": {
        "state_dir": str(tmp_path / "netstate"),
        "bridge_netns": f"/run/netns/lxt-{uid}",
        "pools": {
            # Pool a: a bridge the *test* makes (the project must not change it).
            "a": {"bridge": f"lxa{uid}", "subnet": f"{SUBNET_A}.0/24",
                  "gateway": f"{SUBNET_A}.1", "range": f"{SUBNET_A}.10-{SUBNET_A}.20",
                  "dns": [f"{SUBNET_A}.1", "10.251.9.9"], "dns_search": ["a.test"],
                  "dns_options": ["ndots:1"]},
            # Pool b: a bridge the project creates.
            "b": {"bridge": f"lxb{uid}", "subnet": f"{SUBNET_B}.0/24",
                  "gateway": f"{SUBNET_B}.1", "range": f"{SUBNET_B}.10-{SUBNET_B}.11"},
            # VLAN on a bridge the project creates.
            "v": {"bridge": f"lxv{uid}", "subnet": "10.251.3.0/24", "vlan": 10},
            # Room for the concurrency test.
            "c": {"bridge": f"lxc{uid}", "subnet": "10.251.5.0/24"},
        }}})
    sh("ip", "netns", "add", t.bridge_ns)
    try:
        # A fixed MAC, as a Proxmox bridge has from its physical port: otherwise the kernel gives
        # the bridge the lowest MAC among its ports whenever one is added.
        sh("ip", "-n", t.bridge_ns, "link", "add", t.bridge("a"), "address", "02:00:00:fb:01:01",
           "type", "bridge")
        sh("ip", "-n", t.bridge_ns, "addr", "add", f"{SUBNET_A}.1/24", "dev", t.bridge("a"))
        sh("ip", "-n", t.bridge_ns, "link", "set", t.bridge("a"), "up")
        yield t
    finally:
        prov = NetworkProvisioner(t.state_dir)
        for cfg in t.made:  # whatever a failing test left
            asyncio.run(prov.release(cfg))
            nsmod.remove(t.netns_path(cfg))
        sh("ip", "netns", "del", t.bridge_ns, check=False)


def prepare(t: Topology, *cfgs: CreateConfig) -> list[CreateConfig]:
    async def run() -> list[CreateConfig]:
        prov = NetworkProvisioner(t.state_dir)
        return [await prov.prepare(c) for c in cfgs]
    return asyncio.run(run())


def release(t: Topology, *cfgs: CreateConfig) -> None:
    async def run() -> None:
        prov = NetworkProvisioner(t.state_dir)
        for c in cfgs:
            await prov.release(c)
    asyncio.run(run())


def joined_path(cfg: CreateConfig) -> str:
    (entry,) = [n for n in cfg.spec["linux"]["namespaces"] if n["type"] == "network"]
    return str(entry["path"])


def test_one_pool_talks_another_pool_does_not(topo: Topology) -> None:
    before = stable_view(topo.bridge_links()[topo.bridge("a")])
    c1, c2, c3 = prepare(topo, topo.config("c1", network="a"), topo.config("c2", network="a"),
                         topo.config("c3", network="b"))
    n1, n2, n3 = joined_path(c1), joined_path(c2), joined_path(c3)
    assert n1 == str(topo.netns_path(c1)) and nsmod.is_bound(Path(n1))
    assert ping(n1, f"{SUBNET_A}.11") and ping(n2, f"{SUBNET_A}.10")
    # The bridge namespace does not forward (a new namespace starts with ip_forward 0), so the
    # other pool's subnet is unreachable even through the gateways.
    fwd = sh("ip", "netns", "exec", topo.bridge_ns, "cat", "/proc/sys/net/ipv4/ip_forward")
    assert fwd.stdout.strip() == "0"
    assert not ping(n3, f"{SUBNET_A}.10", count=1)
    assert not ping(n1, f"{SUBNET_B}.10", count=1)
    # The test's own bridge is unchanged apart from its new ports.
    assert stable_view(topo.bridge_links()[topo.bridge("a")]) == before
    release(topo, c1, c2, c3)
    for c in (c1, c2, c3):
        assert topo.leftovers(c) == []
    assert stable_view(topo.bridge_links()[topo.bridge("a")]) == before


def test_eth0_address_route_mtu_and_mac(topo: Topology) -> None:
    (c1,) = prepare(topo, topo.config("c1", network="a", ip=f"{SUBNET_A}.15/24", mtu="1400"))
    path = joined_path(c1)
    (eth0,) = json.loads(sh("nsenter", f"--net={path}", "ip", "-j", "addr", "show", "eth0").stdout)
    assert eth0["mtu"] == 1400 and eth0["operstate"] == "UP"
    assert [(a["local"], a["prefixlen"]) for a in eth0["addr_info"] if a["family"] == "inet"] \
        == [(f"{SUBNET_A}.15", 24)]
    assert eth0["address"] == stable_mac("default", c1.id)  # the same after a restart
    routes = json.loads(sh("nsenter", f"--net={path}", "ip", "-j", "route").stdout)
    assert {"dst": "default", "gateway": f"{SUBNET_A}.1"}.items() <= routes[0].items()
    host = topo.bridge_links()[topo.veth(c1)]
    assert host["master"] == topo.bridge("a") and host["mtu"] == 1400
    release(topo, c1)
    assert topo.leftovers(c1) == []


def test_dns_files_match_the_configuration(topo: Topology) -> None:
    (c1,) = prepare(topo, topo.config("web", network="a"))
    mounts = {m["destination"]: m for m in c1.spec["mounts"]}
    resolv = Path(mounts["/etc/resolv.conf"]["source"]).read_text()
    assert resolv == (f"nameserver {SUBNET_A}.1\nnameserver 10.251.9.9\nsearch a.test\n"
                      "options ndots:1\n")
    hosts = Path(mounts["/etc/hosts"]["source"]).read_text()
    assert hosts.endswith(f"{SUBNET_A}.10\tweb\n")
    assert mounts["/etc/resolv.conf"]["options"] == ["rbind", "ro"]
    release(topo, c1)


def test_dns_annotation_overrides(topo: Topology) -> None:
    (c1,) = prepare(topo, topo.config("c1", network="b", dns="10.251.8.8"))
    resolv = {m["destination"]: m for m in c1.spec["mounts"]}["/etc/resolv.conf"]["source"]
    assert Path(resolv).read_text() == "nameserver 10.251.8.8\n"
    release(topo, c1)


def test_the_project_creates_a_missing_bridge_and_records_it(topo: Topology) -> None:
    assert topo.bridge("b") not in topo.bridge_links()
    (c3,) = prepare(topo, topo.config("c3", network="b"))
    br = topo.bridge_links()[topo.bridge("b")]
    assert br["linkinfo"]["info_kind"] == "bridge"
    addrs = json.loads(sh("ip", "-n", topo.bridge_ns, "-j", "addr", "show", topo.bridge("b")
                          ).stdout)[0]["addr_info"]
    assert [a["local"] for a in addrs if a["family"] == "inet"] == [f"{SUBNET_B}.1"]
    owned = json.loads((topo.state_dir / "bridges.json").read_text())
    assert [v["name"] for v in owned.values()] == [topo.bridge("b")]
    release(topo, c3)
    assert topo.bridge("b") in topo.bridge_links()  # shared infrastructure: kept


def test_joined_namespace_gets_nothing(topo: Topology) -> None:
    cfg = topo.config("j1")
    cfg.spec["linux"]["namespaces"][1]["path"] = "/run/netns/" + topo.bridge_ns
    topo.settings["network"]["default_pool"] = "a"
    before = set(topo.bridge_links())
    (out,) = prepare(topo, cfg)
    assert out is cfg or out == cfg
    assert set(topo.bridge_links()) == before and not os.path.lexists(topo.netns_path(cfg))


def test_pod_members_share_one_network(topo: Topology) -> None:
    group = {"io.containerd.runc.v2.group": f"pod-{topo.uid}"}
    a, b = topo.config("pa", network="a"), topo.config("pb", network="a")
    a.spec["annotations"].update(group)
    b.spec["annotations"].update(group)
    pa, pb = prepare(topo, a, b)
    assert joined_path(pa) == joined_path(pb)
    assert list(topo.leases("a").values()) == [f"default/pod-{topo.uid}"]
    release(topo, pa)
    assert nsmod.is_bound(Path(joined_path(pb)))  # still used by pb
    release(topo, pb)
    assert not os.path.lexists(joined_path(pb)) and topo.leases("a") == {}


def test_state_survives_a_restarted_shim_and_delete_releases(topo: Topology) -> None:
    (c1,) = prepare(topo, topo.config("c1", network="b"))  # one provisioner (shim)
    (c2,) = prepare(topo, topo.config("c2", network="b"))  # a new one: sees c1's lease
    assert sorted(topo.leases("b")) == [f"{SUBNET_B}.10", f"{SUBNET_B}.11"]
    with pytest.raises(Unavailable, match=r"pool 'b' is full: no free address in "
                                          rf"{SUBNET_B}.10-{SUBNET_B}.11"):
        prepare(topo, topo.config("c3", network="b"))
    release(topo, c1)
    assert list(topo.leases("b").values()) == [f"default/{c2.id}"]
    (c4,) = prepare(topo, topo.config("c4", network="b"))
    assert topo.leases("b")[f"{SUBNET_B}.10"] == f"default/{c4.id}"
    release(topo, c2, c4)


def test_failed_create_leaves_nothing(topo: Topology) -> None:
    # An interface already holds the veth name: creating the pair fails half-way, after the
    # lease and the namespace were made.
    cfg = topo.config("f1", network="a")
    # (A veth: this kernel has no dummy driver.)
    sh("ip", "-n", topo.bridge_ns, "link", "add", topo.veth(cfg), "type", "veth", "peer", "name",
       f"x{topo.uid}")
    with pytest.raises(AlreadyExists, match=rf"create veth {topo.veth(cfg)}"):
        prepare(topo, cfg)
    assert topo.leftovers(cfg) == [f"veth {topo.veth(cfg)}"]  # the foreign one: untouched
    sh("ip", "-n", topo.bridge_ns, "link", "del", topo.veth(cfg))
    assert topo.leftovers(cfg) == []


def test_requested_address_conflict_is_clear_and_leaves_nothing(topo: Topology) -> None:
    (c1,) = prepare(topo, topo.config("c1", network="a", ip=f"{SUBNET_A}.12/24"))
    c2 = topo.config("c2", network="a", ip=f"{SUBNET_A}.12/24")
    with pytest.raises(AlreadyExists, match=rf"{SUBNET_A}.12 is leased to default/{c1.id}"):
        prepare(topo, c2)
    assert topo.leftovers(c2) == []
    release(topo, c1)


def test_delete_action_cleanup_after_a_killed_shim(topo: Topology) -> None:
    (c1,) = prepare(topo, topo.config("k1", network="a"))
    # The shim dies without release; the delete action runs the standard-library cleanup in a
    # fresh interpreter, which must not import pyroute2.
    code = ("import sys; from pathlib import Path; from network.cleanup import cleanup; "
            f"cleanup(Path({str(c1.state_dir)!r})); "
            "assert 'pyroute2' not in sys.modules, 'pyroute2 imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=10,
                       cwd=Path(__file__).parents[2])
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert topo.leftovers(c1) == []


def test_vlan_on_a_bridge_that_is_not_ours_and_not_vlan_aware_is_refused(topo: Topology) -> None:
    cfg = topo.config("v1", network="a", vlan="10")
    before = stable_view(topo.bridge_links()[topo.bridge("a")])
    with pytest.raises(FailedPrecondition, match=rf"bridge {topo.bridge('a')} is not VLAN-aware "
                                                 "and was not created by proxmox-lxcri"):
        prepare(topo, cfg)
    assert topo.leftovers(cfg) == []
    assert stable_view(topo.bridge_links()[topo.bridge("a")]) == before


def test_vlan_without_8021q_is_a_clear_error_and_leaves_nothing(topo: Topology) -> None:
    if vlan_capable():
        pytest.skip("this kernel has 802.1Q; the VLAN tests run in tests/kernel")
    cfg = topo.config("v2", network="v")
    with pytest.raises(FailedPrecondition, match=r"no 802.1Q VLAN support"):
        prepare(topo, cfg)
    assert topo.leftovers(cfg) == []
    assert topo.bridge("v") not in topo.bridge_links()  # the bridge made for it is gone too
    assert not (topo.state_dir / "bridges.json").exists() or topo.bridge("v") not in \
        (topo.state_dir / "bridges.json").read_text()


def test_interface_stats_count_the_pings(topo: Topology) -> None:
    c1, c2 = prepare(topo, topo.config("s1", network="a"), topo.config("s2", network="a"))
    assert ping(joined_path(c1), f"{SUBNET_A}.11", count=3)
    (eth0,) = interface_stats(joined_path(c1))
    assert eth0.name == "eth0" and eth0.tx_packets >= 3 and eth0.rx_packets >= 3
    assert eth0.tx_bytes > 3 * 84 and eth0.rx_errors == 0
    release(topo, c1, c2)
    with pytest.raises(OSError):
        interface_stats(joined_path(c1))


def test_a_namespace_already_at_the_path_is_an_error_and_stays(topo: Topology) -> None:
    cfg = topo.config("st1", network="a")
    stale = topo.netns_path(cfg)
    sh("ip", "netns", "add", stale.name)  # e.g. left by an earlier container of that id
    try:
        with pytest.raises(AlreadyExists, match=rf"network namespace {stale} already exists"):
            prepare(topo, cfg)
        assert nsmod.is_bound(stale)  # not ours: untouched
        assert topo.leftovers(cfg) == [f"namespace {stale}"]
    finally:
        sh("ip", "netns", "del", stale.name, check=False)
    assert topo.leftovers(cfg) == []


def test_a_missing_bridge_namespace_is_a_clear_error(topo: Topology) -> None:
    topo.settings["network"]["bridge_netns"] = f"/run/netns/lxt-missing-{topo.uid}"
    cfg = topo.config("m1", network="a")
    with pytest.raises(FailedPrecondition, match=rf"network namespace /run/netns/lxt-missing-"
                                                 rf"{topo.uid}: No such file or directory"):
        prepare(topo, cfg)
    assert topo.leftovers(cfg) == []


def test_vlan_subinterface_without_8021q_is_a_clear_error_and_leaves_nothing(
        topo: Topology) -> None:
    if vlan_capable():
        pytest.skip("this kernel has 802.1Q; the VLAN tests run in tests/kernel")
    uplink = f"up{topo.uid}"
    sh("ip", "-n", topo.bridge_ns, "link", "add", uplink, "type", "veth", "peer", "name",
       f"uq{topo.uid}")
    topo.settings["network"]["pools"]["s"] = {
        "bridge": f"lxs{topo.uid}", "subnet": "10.251.4.0/24", "vlan": 30,
        "vlan_mode": "subinterface", "uplink": uplink}
    before = set(topo.bridge_links())
    cfg = topo.config("vs", network="s")
    with pytest.raises(FailedPrecondition, match=rf"cannot create VLAN device {uplink}.30: this "
                                                 "kernel has no 802.1Q VLAN support"):
        prepare(topo, cfg)
    assert topo.leftovers(cfg) == []
    assert set(topo.bridge_links()) == before  # lxs<uid>v30 made for the attempt is gone


def test_fifty_concurrent_creates_and_deletes(topo: Topology) -> None:
    cfgs = [topo.config(f"cc{i}", network="c") for i in range(50)]

    async def run() -> list[CreateConfig]:
        prov = NetworkProvisioner(topo.state_dir)
        made = await asyncio.gather(*(prov.prepare(c) for c in cfgs))
        assert all(nsmod.is_bound(Path(joined_path(c))) for c in made)
        leases = topo.leases("c")
        assert len(leases) == 50 and len(set(leases.values())) == 50
        await asyncio.gather(*(prov.release(c) for c in made))
        return list(made)

    made = asyncio.run(run())
    assert [c for c in made if topo.leftovers(c)] == []
    assert topo.leases("c") == {}
