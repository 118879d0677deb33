"""IP address management: persistent leases per pool. Standard library only (the ``delete``
action releases leases too).

State: ``<state_dir>/ipam/<pool>.json`` = ``{"leases": {address: owner}, "last": address}``,
read-modify-written under the state directory's lock (:mod:`network.statefile`), so concurrent
shims and restarted ones never hand out an address twice. An owner is ``<namespace>/<key>``
(the network's owner, :class:`network.plan.NetworkPlan`); allocating again for the same owner
returns its lease (a retried or restarted create). Addresses are handed out round-robin after
the last one given, as CNI's host-local does, so a just-released address is not reused at once
(a peer's ARP cache may still point at the old MAC).

The methods block (file lock, fsync): asyncio callers run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path
from typing import Any

from network import statefile
from network.config import Pool
from runtime.errdefs import AlreadyExists, Unavailable


class Ipam:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def _path(self, pool: str) -> Path:
        return self.state_dir / "ipam" / f"{pool}.json"

    def _load(self, pool: str) -> dict[str, Any]:
        data = statefile.read_json(self._path(pool))
        if not isinstance(data, dict) or not isinstance(data.get("leases"), dict):
            return {"leases": {}, "last": ""}
        return data

    def allocate(self, pool: Pool, owner: str,
                 requested: ipaddress.IPv4Address | None = None) -> ipaddress.IPv4Address:
        """Lease ``requested`` (or the next free address of the pool's range) to ``owner``.

        Raises AlreadyExists when ``requested`` is leased to another owner, Unavailable when
        the pool has no free address.
        """
        with statefile.locked(self.state_dir):
            data = self._load(pool.name)
            leases: dict[str, str] = data["leases"]
            mine = [a for a, o in leases.items() if o == owner]
            if mine and (requested is None or str(requested) in mine):
                return ipaddress.IPv4Address(mine[0])
            if requested is not None:
                holder = leases.get(str(requested))
                if holder is not None and holder != owner:
                    raise AlreadyExists(f"pool {pool.name!r}: address {requested} is leased to "
                                        f"{holder}")
                addr = requested
            else:
                addr = self._next_free(pool, leases, data.get("last", ""))
            for old in mine:  # an owner holds one address per pool
                del leases[old]
            leases[str(addr)] = owner
            data["last"] = str(addr) if requested is None else data.get("last", "")
            data["updated"] = time.time()
            statefile.write_json(self._path(pool.name), data)
            return addr

    @staticmethod
    def _next_free(pool: Pool, leases: dict[str, str], last: str) -> ipaddress.IPv4Address:
        first, end = int(pool.first), int(pool.last)
        size = end - first + 1
        try:
            start = int(ipaddress.IPv4Address(last)) + 1 if last else first
        except ValueError:
            start = first
        if not first <= start <= end:
            start = first
        for i in range(size):
            addr = ipaddress.IPv4Address(first + (start - first + i) % size)
            if str(addr) not in leases and pool.usable(addr):
                return addr
        used = sum(1 for a in leases if pool.first <= ipaddress.IPv4Address(a) <= pool.last)
        raise Unavailable(f"pool {pool.name!r} is full: no free address in {pool.first}-"
                          f"{pool.last} ({used} leased)")

    def release(self, pool: str, owner: str) -> list[str]:
        """Drop every lease of ``owner`` in ``pool``; the released addresses (idempotent)."""
        with statefile.locked(self.state_dir):
            data = self._load(pool)
            gone = [a for a, o in data["leases"].items() if o == owner]
            if gone:
                for a in gone:
                    del data["leases"][a]
                data["updated"] = time.time()
                statefile.write_json(self._path(pool), data)
            return gone

    def leases(self, pool: str) -> dict[str, str]:
        """address → owner of every lease in ``pool``."""
        with statefile.locked(self.state_dir):
            return dict(self._load(pool)["leases"])
