"""``proxmox-lxcri``: the operator's command line over the shim's state root.

``list`` shows what the shims on this node run and ``events`` the lifecycle event log
(shim/events_cli.py), ``health`` and ``metrics`` check and measure the node (shim/node_cli.py);
the storage commands (checkpoint, restore, checkpoints, images, storage)
come from storage/cli.py and the OCI runtime commands (create, start, state, kill, delete, run,
spec …) from shim/oci_cli.py. docs/cli.md describes them all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from shim.cli import VERSION


def alive(pid: int) -> bool:
    """Whether ``pid`` names a live process (one owned by another user counts)."""
    if pid <= 0:
        return False  # kill(0 or -n, 0) would test a process group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def cmd_list(args: argparse.Namespace) -> int:
    from runtime.store import CLI_OWNER, Store, TaskRecord, state_root

    rows = []
    for ns, id, raw in Store(state_root()).list():
        rec = TaskRecord.from_json(raw)  # the same record for shim and OCI CLI containers
        status = rec.status or "unknown"
        live = status in ("running", "created", "paused") and alive(rec.pid)
        if rec.owner == CLI_OWNER:
            # Made by the OCI CLI: no shim watches it, so a gone process is simply stopped
            # (runc's `state` says the same until `delete`).
            if status in ("running", "created", "paused") and not live:
                status = "stopped"
        elif status in ("running", "created", "paused") and not live:
            status = "lost"  # the snapshot says alive but the process is gone (shim crash)
        rows.append({"namespace": ns, "id": id, "pid": rec.pid or None, "status": status,
                     "shim_pid": rec.shim_pid or None, "bundle": rec.bundle,
                     "backend": rec.backend})
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    fmt = "{:<12} {:<24} {:>8} {:<8} {:>9}"
    print(fmt.format("NAMESPACE", "ID", "PID", "STATUS", "SHIM PID"))
    for r in rows:
        print(fmt.format(r["namespace"], r["id"], r["pid"] or "-", r["status"],
                         r["shim_pid"] or "-"))
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="proxmox-lxcri",
                                     description="Operate the io.containerd.proxmox.v2 runtime.")
    parser.add_argument("--root", help="state root (default $PROXMOX_LXCRI_ROOT or "
                                       "/run/proxmox-lxcri)")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="containers served by shims on this node")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_list)
    sub.add_parser("version", help="print the version").set_defaults(
        func=lambda a: print(f"proxmox-lxcri {VERSION}") or 0)
    from shim import events_cli  # the lifecycle event log

    events_cli.register(sub)
    from storage import cli as storage_cli  # [storage] checkpoint, restore, images …

    storage_cli.register(sub)
    from runtime.proxmox import opcli as pve_cli  # pve-images ls|prune

    pve_cli.register(sub)
    from shim import node_cli  # health, metrics

    node_cli.register(sub)
    from shim import oci_cli  # [oci] create, start, state, kill, delete, run, spec …

    oci_cli.register(parser, sub)
    args = parser.parse_args(argv)
    if args.root:
        os.environ["PROXMOX_LXCRI_ROOT"] = args.root
    raise SystemExit(args.func(args))
