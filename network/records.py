"""What was made for each shim-managed network, persisted for tear-down. Standard library only.

Two kinds of file:

- ``<network state_dir>/networks/<hash>.json``, one per network (per container, or per pod
  when a group shares it): the namespace, the host veth, the bridge, the pool and address, and
  the member containers. The last member to leave tears the network down.
- ``<container state_dir>/network.json``: which network record the container belongs to, so the
  ``delete`` action (which only knows the container's state directory) finds it.

Membership changes happen under the state directory's lock (:mod:`network.statefile`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from network import statefile

CONTAINER_FILE = "network.json"


@dataclass
class Record:
    namespace: str
    key: str
    pool: str
    netns: str
    host_ifname: str
    bridge: str
    bridge_netns: str = ""
    vlan: int | None = None
    address: str = ""
    prefixlen: int = 0
    #: Whether tear-down may remove the namespace: set before it is created (so a shim killed
    #: right after creating it still leaves a record of it), cleared if the path was taken.
    owns_netns: bool = False
    #: Set once the veth pair exists: only then may tear-down delete ``host_ifname`` (an
    #: interface of that name made by someone else is never touched).
    veth: bool = False
    members: list[str] = field(default_factory=list)

    @property
    def owner(self) -> str:
        """The IPAM owner string of this network."""
        return f"{self.namespace}/{self.key}"

    @classmethod
    def from_json(cls, data: Any) -> Record | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except TypeError:
            return None


def record_path(state_dir: Path, namespace: str, key: str) -> Path:
    digest = hashlib.sha256(f"{namespace}/{key}".encode()).hexdigest()[:32]
    return state_dir / "networks" / f"{digest}.json"


def load(state_dir: Path, namespace: str, key: str) -> Record | None:
    with statefile.locked(state_dir):
        return Record.from_json(statefile.read_json(record_path(state_dir, namespace, key)))


def join(state_dir: Path, new: Record, member: str) -> tuple[Record, bool]:
    """Add ``member`` to the network ``new`` describes; (record, True if it did not exist yet,
    so the caller must build it)."""
    path = record_path(state_dir, new.namespace, new.key)
    with statefile.locked(state_dir):
        rec = Record.from_json(statefile.read_json(path))
        created = rec is None
        if rec is None:
            rec = new
        if member not in rec.members:
            rec.members.append(member)
        statefile.write_json(path, asdict(rec))
        return rec, created


def update(state_dir: Path, rec: Record) -> None:
    """Store ``rec`` (e.g. with its address filled in), keeping the members on disk."""
    path = record_path(state_dir, rec.namespace, rec.key)
    with statefile.locked(state_dir):
        current = Record.from_json(statefile.read_json(path))
        if current is not None:
            rec.members = current.members
        statefile.write_json(path, asdict(rec))


def leave(state_dir: Path, namespace: str, key: str, member: str) -> Record | None:
    """Remove ``member``; the record when no member is left (the caller tears the network down
    and then calls :func:`forget`), else None."""
    path = record_path(state_dir, namespace, key)
    with statefile.locked(state_dir):
        rec = Record.from_json(statefile.read_json(path))
        if rec is None:
            return None
        if member in rec.members:
            rec.members.remove(member)
            statefile.write_json(path, asdict(rec))
        return rec if not rec.members else None


def forget(state_dir: Path, namespace: str, key: str) -> None:
    with statefile.locked(state_dir):
        statefile.remove(record_path(state_dir, namespace, key))


# -- the container's pointer ------------------------------------------------------------------


def save_pointer(container_state_dir: Path, network_state_dir: Path, rec: Record,
                 member: str) -> None:
    statefile.write_json(container_state_dir / CONTAINER_FILE, {
        "state_dir": str(network_state_dir), "namespace": rec.namespace, "key": rec.key,
        "member": member, "netns": rec.netns})


def load_pointer(container_state_dir: Path) -> dict[str, str] | None:
    try:
        data = statefile.read_json(container_state_dir / CONTAINER_FILE)
    except OSError:
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in
                                             ("state_dir", "namespace", "key", "member")):
        return None
    return data


def drop_pointer(container_state_dir: Path) -> None:
    statefile.remove(container_state_dir / CONTAINER_FILE)
