"""Interface counters of a container's network namespace, for the task's Stats. Stdlib only.

``/proc/thread-self/net/dev`` lists the devices of the reading thread's network namespace
(proc(5), /proc/net/dev), so a thread that entered the namespace (:func:`network.netns.run_in`)
reads exactly the container's interfaces: no netlink, no sysfs mount.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from network import netns, records


@dataclass(frozen=True)
class InterfaceStats:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str, include_loopback: bool = False) -> list[InterfaceStats]:
    """Parse /proc/net/dev: two header lines, then ``name: rx(8 fields) tx(8 fields)`` with rx
    bytes packets errs drop fifo frame compressed multicast and tx bytes packets errs drop fifo
    colls carrier compressed."""
    out: list[InterfaceStats] = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 16:
            continue
        name = name.strip()
        if name == "lo" and not include_loopback:
            continue
        v = [int(f) for f in fields[:16]]
        out.append(InterfaceStats(name, v[0], v[1], v[2], v[3], v[8], v[9], v[10], v[11]))
    return out


def _read_net_dev() -> str:
    with open("/proc/thread-self/net/dev", encoding="ascii") as f:
        return f.read()


def interface_stats(netns_path: str | Path, include_loopback: bool = False
                    ) -> list[InterfaceStats]:
    """Counters of every interface (loopback excluded unless asked) in the network namespace at
    ``netns_path`` (a bind mount like ``/run/netns/X`` or ``/proc/<pid>/ns/net``). Blocks for a
    thread start: call it through ``asyncio.to_thread`` from the daemon. Raises OSError when
    the namespace is gone."""
    return parse_net_dev(netns.run_in(netns_path, _read_net_dev), include_loopback)


def netns_of(container_state_dir: Path) -> str | None:
    """The shim-managed namespace of a container (from its ``network.json``), or None when the
    container joined a namespace it was given (use ``/proc/<init pid>/ns/net`` then)."""
    ptr = records.load_pointer(container_state_dir)
    return ptr.get("netns") if ptr else None
