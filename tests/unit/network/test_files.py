"""Pure pieces: DNS files, /proc/net/dev parsing, the hand-made RTM_DELLINK, records."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

from network import dns, records, rtnl_min
from network.stats import InterfaceStats, parse_net_dev


def test_resolv_conf_rendering_respects_resolver_limits() -> None:
    text = dns.render_resolv(("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"),
                             ("a.example", "b.example"), ("ndots:2",))
    assert text == ("nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n"
                    "search a.example b.example\noptions ndots:2\n")


def test_hosts_names_the_container() -> None:
    text = dns.render_hosts(ipaddress.IPv4Address("10.0.0.5"), "web")
    assert "127.0.0.1\tlocalhost\n" in text and text.endswith("10.0.0.5\tweb\n")


def test_bind_mounts_replace_existing_destinations(tmp_path: Path) -> None:
    spec = {"mounts": [{"destination": "/etc/hosts", "type": "bind", "source": "/old"},
                       {"destination": "/data", "type": "bind", "source": "/d"}]}
    out = dns.bind_mounts(spec, {"/etc/hosts": tmp_path / "hosts"})
    assert out["mounts"] == [
        {"destination": "/data", "type": "bind", "source": "/d"},
        {"destination": "/etc/hosts", "type": "bind", "source": str(tmp_path / "hosts"),
         "options": ["rbind", "ro"]}]
    assert spec["mounts"][0]["source"] == "/old"  # the input is not modified


NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0:    5000      40    1    2    0     0          0         3     7000      50    4    5    0     0       0          0
"""  # noqa: E501


def test_net_dev_parsing() -> None:
    assert parse_net_dev(NET_DEV) == [InterfaceStats("eth0", 5000, 40, 1, 2, 7000, 50, 4, 5)]
    assert [s.name for s in parse_net_dev(NET_DEV, include_loopback=True)] == ["lo", "eth0"]


def test_dellink_message_layout() -> None:
    msg = rtnl_min.dellink_message("lx0123456789abc", seq=7)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", msg)
    assert (length, kind, flags, seq) == (len(msg), 17, 0x5, 7)
    rta_len, rta_type = struct.unpack_from("=HH", msg, 32)
    assert rta_type == 3 and msg[36:36 + rta_len - 4] == b"lx0123456789abc\0"
    assert len(msg) % 4 == 0


def rec(key: str = "c1") -> records.Record:
    return records.Record(namespace="default", key=key, pool="p", netns="/run/netns/x",
                          host_ifname="lx1", bridge="br0")


def test_members_join_and_the_last_one_tears_down(tmp_path: Path) -> None:
    r, created = records.join(tmp_path, rec("pod"), "a")
    assert created and r.members == ["a"]
    r, created = records.join(tmp_path, rec("pod"), "b")
    assert not created and r.members == ["a", "b"]
    assert records.leave(tmp_path, "default", "pod", "a") is None
    last = records.leave(tmp_path, "default", "pod", "b")
    assert last is not None and last.members == [] and last.owner == "default/pod"
    records.forget(tmp_path, "default", "pod")
    assert records.load(tmp_path, "default", "pod") is None


def test_pointer_round_trip(tmp_path: Path) -> None:
    records.save_pointer(tmp_path / "c", tmp_path / "net", rec(), "c1")
    ptr = records.load_pointer(tmp_path / "c")
    assert ptr is not None and ptr["key"] == "c1" and ptr["state_dir"] == str(tmp_path / "net")
    records.drop_pointer(tmp_path / "c")
    assert records.load_pointer(tmp_path / "c") is None


def test_the_delete_action_looks_for_the_pointer_records_writes() -> None:
    from network import cleanup

    assert cleanup.POINTER == records.CONTAINER_FILE


def test_cleanup_without_a_network_is_a_no_op(tmp_path: Path) -> None:
    from network import cleanup

    cleanup.cleanup(tmp_path)  # no network.json: nothing to do, nothing raised
    assert list(tmp_path.iterdir()) == []
