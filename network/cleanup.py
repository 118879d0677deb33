"""Tear-down of a container's shim-managed network. Standard library only.

Used by the ``delete`` action (after a killed shim, and after every task) through
:func:`cleanup`, and by the daemon's provisioner for the same steps (one code path). Every step
is idempotent and only touches what the network record names: the host end of the veth (its
peer goes with it, veth(4)), the namespace bind mount, and the lease. Bridges are never touched.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from network.records import Record

#: The container's pointer file (records.CONTAINER_FILE), named here so that the ``delete``
#: action, run after every task, imports nothing more for a container without a network.
POINTER = "network.json"


def teardown(state_dir: Path, rec: Record) -> list[str]:
    """Remove what ``rec`` names and forget the record; the errors of steps that failed (the
    record is then kept, so a later ``delete`` retries)."""
    from network import netns, records, rtnl_min
    from network.ipam import Ipam

    errors: list[str] = []
    if rec.owns_netns:
        # Unbinding the namespace destroys it once the container's processes are gone, and
        # with it the peer; a veth pair dies with either end (veth(4)).
        try:
            netns.remove(Path(rec.netns))
        except OSError as exc:
            errors.append(f"network namespace {rec.netns}: {exc}")
    if rec.veth:
        # Namespace destruction runs asynchronously in the kernel (net/core/net_namespace.c
        # cleanup_net), so delete the host end now rather than leave it for a while.
        try:
            rtnl_min.delete_link(rec.host_ifname, rec.bridge_netns or None)
        except OSError as exc:
            errors.append(f"veth {rec.host_ifname}: {exc}")
    try:
        Ipam(state_dir).release(rec.pool, rec.owner)
    except OSError as exc:
        errors.append(f"lease of {rec.owner} in pool {rec.pool}: {exc}")
    if not errors:
        records.forget(state_dir, rec.namespace, rec.key)
    return errors


def leave(container_state_dir: Path) -> list[str]:
    """The container leaves its network; the last member tears it down. Errors as text."""
    from network import records

    ptr = records.load_pointer(container_state_dir)
    if ptr is None:
        return []
    state_dir = Path(ptr["state_dir"])
    rec = records.leave(state_dir, ptr["namespace"], ptr["key"], ptr["member"])
    errors = teardown(state_dir, rec) if rec is not None else []
    if not errors:
        records.drop_pointer(container_state_dir)
    return errors


def cleanup(container_state_dir: Path) -> None:
    """What ``containerd-shim-proxmox-v2 delete`` calls after the backend's clean-up (the
    container's processes are gone, so its namespace can really go). Never raises: a failure is
    logged and the pointer file kept for a retry."""
    if not (container_state_dir / POINTER).exists():
        return
    try:
        errors = leave(container_state_dir)
    except OSError as exc:
        errors = [str(exc)]
    for err in errors:  # stderr: containerd logs what the delete action writes there
        sys.stderr.write(f"network clean-up of {container_state_dir}: {err}\n")
