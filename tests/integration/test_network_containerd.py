"""Issue acceptance, end to end: ``ctr run --runtime io.containerd.proxmox.v2`` containers on
shim-managed networks (bridges, pools, DNS), joined namespaces, and tear-down.

A private containerd of this module gets the network configuration through
``PROXMOX_LXCRI_CONFIG`` (containerd passes its environment to shims). The pools' bridges live
in a namespace the module made (``lxt-<uid>``), so traffic only flows between namespaces and
bridges the tests created.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from network.ipam import Ipam
from network.plan import host_ifname, netns_name
from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import BusyboxImage, require_integration
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

RUNTIME = "io.containerd.proxmox.v2"
NET_A, NET_B = "10.252.1", "10.252.2"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and r.returncode:
        raise AssertionError(f"{argv} rc={r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@dataclass
class Net:
    ctd: PrivateContainerd
    image: BusyboxImage
    uid: str
    bridge_ns: str

    @property
    def state_dir(self) -> Path:
        return self.ctd.lxcri_root / "network"

    def run(self, cid: str, *cmd: str, detach: bool = False, ann: dict[str, str] | None = None,
            extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        flags = ["-d"] if detach else ["--rm"]
        for k, v in (ann or {}).items():
            flags += ["--annotation", f"lxcri.proxmox.io/{k}={v}"]
        return self.ctd.ctr("run", *flags, *extra, "--runtime", RUNTIME, self.image.ref, cid,
                            *cmd, check=False, timeout=60)

    def bridge_links(self) -> set[str]:
        out = json.loads(sh("ip", "-n", self.bridge_ns, "-j", "link", "show").stdout)
        return {link["ifname"] for link in out}

    def leases(self, pool: str) -> dict[str, str]:
        return Ipam(self.state_dir).leases(pool)

    def residue(self, cid: str) -> list[str]:
        out = []
        path = Path("/run/netns") / netns_name(self.ctd.namespace, cid)
        if os.path.lexists(path):
            out.append(f"namespace {path}")
        if host_ifname(self.ctd.namespace, cid) in self.bridge_links():
            out.append(f"veth {host_ifname(self.ctd.namespace, cid)}")
        for pool in ("a", "b"):
            if f"{self.ctd.namespace}/{cid}" in self.leases(pool).values():
                out.append(f"lease in pool {pool}")
        return out


@pytest.fixture(scope="module")
def net(busybox_image: BusyboxImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    require_integration()
    uid = uuid.uuid4().hex[:6]
    bridge_ns = f"lxt-{uid}"
    config = tmp_path_factory.mktemp("netcfg") / "config.toml"
    config.write_text(f"""
[network]
default_pool = "a"
bridge_netns = "/run/netns/{bridge_ns}"

[network.pools.a]
bridge = "lxa{uid}"
subnet = "{NET_A}.0/24"
gateway = "{NET_A}.1"
range = "{NET_A}.100-{NET_A}.200"
dns = ["{NET_A}.1"]
dns_search = ["a.test"]

[network.pools.b]
bridge = "lxb{uid}"
subnet = "{NET_B}.0/24"
gateway = "{NET_B}.1"
""")
    sh("ip", "netns", "add", bridge_ns)
    ctd = PrivateContainerd(env={"PROXMOX_LXCRI_CONFIG": str(config)})
    try:
        # Pool a's bridge is the test's; pool b's the project creates.
        sh("ip", "-n", bridge_ns, "link", "add", f"lxa{uid}", "address", "02:00:00:fc:01:01",
           "type", "bridge")
        sh("ip", "-n", bridge_ns, "link", "set", f"lxa{uid}", "up")
        ctd.start()
        ctd.import_image(busybox_image.tar)
        yield Net(ctd, busybox_image, uid, bridge_ns)
    finally:
        ctd.cleanup()
        sh("ip", "netns", "del", bridge_ns, check=False)


@pytest.fixture
def ids(net: Net) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for cid in made:
        net.ctd.remove_container(cid)


def new_id(ids: list[str], name: str) -> str:
    cid = f"{name}-{uuid.uuid4().hex[:6]}"
    ids.append(cid)
    return cid


def test_two_containers_of_a_pool_talk_and_another_pool_does_not(net: Net,
                                                                  ids: list[str]) -> None:
    a, b, c = new_id(ids, "na"), new_id(ids, "nb"), new_id(ids, "nc")
    r = net.run(a, "sleep", "60", detach=True, ann={"ip": f"{NET_A}.50/24"})
    assert r.returncode == 0, r.stderr
    # b reaches a and a answers b: both stacks, both veths, one bridge.
    r = net.run(b, "ping", "-c", "2", "-W", "2", f"{NET_A}.50", ann={"network": "a"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 packets received" in r.stdout
    # c is on pool b's bridge: no path to pool a (the bridge namespace does not route).
    r = net.run(c, "ping", "-c", "1", "-W", "1", f"{NET_A}.50", ann={"network": "b"})
    assert r.returncode != 0 and "0 packets received" in r.stdout, r.stdout + r.stderr
    assert net.residue(b) == [] and net.residue(c) == []
    net.ctd.remove_container(a)
    assert net.residue(a) == []


def test_resolv_conf_and_hosts_inside_match_the_configuration(net: Net, ids: list[str]) -> None:
    cid = new_id(ids, "dns")
    r = net.run(cid, "cat", "/etc/resolv.conf", "/etc/hosts")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"nameserver {NET_A}.1\nsearch a.test\n127.0.0.1\tlocalhost\n")
    assert f"\t{cid}\n" in r.stdout  # the container's own name in /etc/hosts


def test_eth0_inside_has_the_address_and_the_default_route(net: Net, ids: list[str]) -> None:
    cid = new_id(ids, "eth")
    r = net.run(cid, "sh", "-c", "ip -4 addr show eth0; ip route", ann={"ip": f"{NET_A}.60/24"})
    assert r.returncode == 0, r.stderr
    assert f"inet {NET_A}.60/24" in r.stdout
    assert f"default via {NET_A}.1 dev eth0" in r.stdout


def test_a_given_namespace_is_joined_and_nothing_is_created(net: Net, ids: list[str]) -> None:
    ns = f"lxw-{net.uid}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "add", "wv0", "type", "veth", "peer", "name", "wv1")
        sh("ip", "-n", ns, "addr", "add", "10.252.9.1/24", "dev", "wv0")
        sh("ip", "-n", ns, "link", "set", "wv0", "up")
        before_links, before_ns = net.bridge_links(), set(os.listdir("/run/netns"))
        cid = new_id(ids, "wns")
        r = net.run(cid, "ip", "-4", "addr", extra=("--with-ns", f"network:/run/netns/{ns}"))
        assert r.returncode == 0, r.stderr
        assert "inet 10.252.9.1/24" in r.stdout and "wv0" in r.stdout and "eth0" not in r.stdout
        assert net.bridge_links() == before_links
        assert set(os.listdir("/run/netns")) == before_ns
        assert net.residue(cid) == []
        links = json.loads(sh("ip", "-n", ns, "-j", "link", "show").stdout)
        assert sorted(link["ifname"] for link in links) == ["lo", "wv0", "wv1"]
    finally:
        sh("ip", "netns", "del", ns, check=False)


def test_failed_create_leaves_no_network(net: Net, ids: list[str]) -> None:
    cid = new_id(ids, "fail")
    r = net.run(cid, "/no/such/program")
    assert r.returncode != 0
    assert net.residue(cid) == []


def test_killed_shim_then_delete_leaves_no_network(net: Net, ids: list[str]) -> None:
    cid = new_id(ids, "kill")
    r = net.run(cid, "sleep", "60", detach=True)
    assert r.returncode == 0, r.stderr
    assert net.residue(cid) != []  # it has a network
    shim = net.ctd.shim_pid(cid)
    assert shim is not None
    os.kill(shim, signal.SIGKILL)
    # containerd notices the dead shim and runs the `delete` action for the task.
    net.ctd.ctr("task", "delete", cid, check=False)
    wait_for(lambda: net.residue(cid) == [], what=f"no network residue of {cid}: "
             f"{net.residue(cid)}")


def test_an_unknown_pool_is_a_clear_error(net: Net, ids: list[str]) -> None:
    cid = new_id(ids, "nopool")
    r = net.run(cid, "true", ann={"network": "nope"})
    assert r.returncode != 0
    assert "no pool 'nope' in [network.pools] (a, b)" in r.stderr
    assert net.residue(cid) == []


def test_containers_of_one_group_share_the_network(net: Net, ids: list[str]) -> None:
    group = f"pod-{uuid.uuid4().hex[:6]}"
    first, second = new_id(ids, "pa"), new_id(ids, "pb")
    grouped = ("--annotation", f"io.containerd.runc.v2.group={group}")
    r = net.run(first, "sleep", "60", detach=True, ann={"ip": f"{NET_A}.70/24"}, extra=grouped)
    assert r.returncode == 0, r.stderr
    r = net.run(second, "ip", "-4", "addr", "show", "eth0", extra=grouped)
    assert r.returncode == 0, r.stderr
    assert f"inet {NET_A}.70/24" in r.stdout  # the first member's network
    assert list(net.leases("a").values()).count(f"{net.ctd.namespace}/{group}") == 1
    net.ctd.remove_container(first)
    assert f"{net.ctd.namespace}/{group}" not in net.leases("a").values()
    assert not os.path.lexists(Path("/run/netns") / netns_name(net.ctd.namespace, group))


def test_leases_are_shared_by_separate_shims(net: Net, ids: list[str]) -> None:
    first, second = new_id(ids, "sa"), new_id(ids, "sb")
    for cid in (first, second):
        r = net.run(cid, "sleep", "60", detach=True)
        assert r.returncode == 0, r.stderr
    shims = {net.ctd.shim_pid(first), net.ctd.shim_pid(second)}
    assert len(shims) == 2 and None not in shims  # two shim processes, one lease file
    owners = {owner: addr for addr, owner in net.leases("a").items()}
    ns = net.ctd.namespace
    assert owners[f"{ns}/{first}"] != owners[f"{ns}/{second}"]
    for cid in (first, second):
        net.ctd.remove_container(cid)
        assert net.residue(cid) == []


def test_stats_carry_the_container_interface_counters(net: Net, ids: list[str]) -> None:
    """Stats (what `ctr task metrics` and CRI read) include eth0's counters from the
    container's own namespace."""
    import asyncio

    from protos.cgroups.v1 import metrics_pb2 as v1
    from protos.cgroups.v2 import metrics_pb2 as v2
    from protos.containerd.task.v2 import shim_pb2
    from shim.ttrpc import Client

    a, b = new_id(ids, "sa"), new_id(ids, "sb")
    assert net.run(a, "sleep", "60", detach=True, ann={"ip": f"{NET_A}.70/24"}).returncode == 0
    r = net.run(b, "ping", "-c", "3", "-W", "2", f"{NET_A}.70", ann={"network": "a"})
    assert r.returncode == 0, r.stdout + r.stderr

    async def stats() -> shim_pb2.StatsResponse:
        address = (net.ctd.bundle_dir(a) / "address").read_text()
        client = await Client.connect(address)
        try:
            return await client.call("containerd.task.v2.Task", "Stats",
                                     shim_pb2.StatsRequest(id=a), shim_pb2.StatsResponse,
                                     timeout=10)
        finally:
            await client.close()

    any_stats = asyncio.run(stats()).stats
    cls = v2.Metrics if any_stats.type_url.endswith("v2.Metrics") else v1.Metrics
    metrics = cls.FromString(any_stats.value)
    eth0 = {n.name: n for n in metrics.network}["eth0"]
    assert eth0.rx_packets >= 3 and eth0.tx_packets >= 3  # the pings and their replies
    assert eth0.rx_bytes > 0 and eth0.tx_bytes > 0
