"""The operator CLI's commands for containers of the Proxmox backend (``proxmox-lxcri
checkpoint|checkpoints|restore ID`` on a container whose state directory holds
``pve-state.json``; storage/cli.py hands them here) and for the node's image templates
(``proxmox-lxcri pve-images ls|prune``).

They reach the API the way the task's shim did: the URL, node, token id, secret file and CA
that its state records (runtime.proxmox.state), so they need no ``--config`` for it; only
``checkpoint_keep`` and the template keep policy come from the configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from runtime import errdefs
from runtime.proxmox import checkpoints
from runtime.proxmox import settings as pvesettings
from runtime.proxmox import state as pvestate
from runtime.proxmox.api import PveApi


def settings_of(st: pvestate.PveState, keep: int = 3) -> pvesettings.ProxmoxSettings:
    return pvesettings.ProxmoxSettings(
        url=st.url, node=st.node, token_id=st.token_id,
        token_secret_file=Path(st.token_secret_file), ca_file=st.ca_file,
        conf_dir=Path(st.conf_dir), request_timeout=st.request_timeout, checkpoint_keep=keep)


def find(dirs: list[Path]) -> pvestate.PveState | None:
    """The Proxmox state among a container's state directories (one per namespace), or None
    when it is not a container of this backend. Two namespaces with a CT each: refused."""
    found = [st for st in (pvestate.load(d) for d in dirs) if st is not None and st.vmid]
    if len(found) > 1:
        raise errdefs.FailedPrecondition(
            f"the id is a Proxmox CT in several namespaces (CTs "
            f"{', '.join(str(s.vmid) for s in found)}): name one with --namespace")
    return found[0] if found else None


async def _with_api(s: pvesettings.ProxmoxSettings, work: Any) -> Any:
    api = PveApi(s)
    try:
        return await work(api)
    finally:
        await api.close()


def checkpoint_keep(config: dict[str, Any]) -> int:
    try:
        return pvesettings.parse(config).checkpoint_keep
    except errdefs.InvalidArgument:
        return 3  # a configuration without [proxmox] (the LXC backend's): the default


def restore(id: str, st: pvestate.PveState, name: str | None, processes: bool) -> int:
    if processes:
        raise errdefs.NotImplementedErr(
            f"container {id} (CT {st.vmid}): the Proxmox backend's checkpoints are filesystem "
            "snapshots only; there are no processes to resume (--processes)")
    started = time.monotonic()
    done = asyncio.run(_with_api(settings_of(st), lambda api: checkpoints.rollback(
        api, st.vmid, name, container=id)))
    print(f"restored {done}\t{(time.monotonic() - started) * 1000:.1f} ms\tCT {st.vmid}")
    return 0


def checkpoint(id: str, st: pvestate.PveState, keep: int, *, exit: bool = False) -> int:
    started = time.monotonic()
    name = asyncio.run(_with_api(settings_of(st), lambda api: checkpoints.take(
        api, st.vmid, keep=keep)))
    print(f"{name}\tfilesystem (Proxmox snapshot of CT {st.vmid})\t"
          f"{(time.monotonic() - started) * 1000:.1f} ms")
    if exit:
        # As the ZFS storage's --exit: SIGKILL to the task's init (the CT's PID 1, which
        # takes the program with it), only if it is still the process the shim recorded.
        from runtime.lxc.state import start_time

        if st.pid > 0 and st.pid_start_time and start_time(st.pid) == st.pid_start_time:
            with contextlib.suppress(ProcessLookupError):
                os.kill(st.pid, signal.SIGKILL)
    return 0


def list_checkpoints(id: str, st: pvestate.PveState, as_json: bool, delete: str | None) -> int:
    async def work(api: PveApi) -> list[checkpoints.Checkpoint]:
        if delete:
            if delete not in {c.name for c in await checkpoints.list_checkpoints(api, st.vmid)}:
                raise errdefs.NotFound(f"container {id} (CT {st.vmid}) has no checkpoint "
                                       f"{delete}")
            await api.run("DELETE", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}",
                          vmid=st.vmid, snapname=delete, what=f"delete {delete}")
            return []
        return await checkpoints.list_checkpoints(api, st.vmid)

    listed = asyncio.run(_with_api(settings_of(st), work))
    if delete:
        print(f"deleted {delete}")
        return 0
    rows = [{"name": c.name, "snaptime": c.snaptime, "vmid": st.vmid} for c in listed]
    if as_json:
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print("{:<26} {:>12} {:>8}".format("NAME", "SNAPTIME", "CT"))
        for r in rows:
            print("{:<26} {:>12} {:>8}".format(r["name"], r["snaptime"], r["vmid"]))
    return 0


def _node_settings(args: argparse.Namespace) -> pvesettings.ProxmoxSettings:
    from runtime import config as runtime_config

    raw = runtime_config.load(Path(args.config) if args.config else None)
    return pvesettings.parse(raw)


def cmd_images_ls(args: argparse.Namespace) -> int:
    from runtime.proxmox import images

    found = asyncio.run(_with_api(_node_settings(args), images.scan))
    rows = [{"vmid": t.vmid, "name": t.name, "storage": t.storage, "clones": t.clones,
             "last_used": int(t.last_used)} for t in found]
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print("{:>10} {:<32} {:<12} {:>6}".format("CT", "NAME", "STORAGE", "CLONES"))
    for r in rows:
        print("{:>10} {:<32} {:<12} {:>6}".format(r["vmid"], r["name"], r["storage"],
                                                   len(r["clones"])))
    return 0


def cmd_images_prune(args: argparse.Namespace) -> int:
    from runtime.proxmox import images

    removed = asyncio.run(_with_api(_node_settings(args),
                                    lambda api: images.prune(api, keep=args.keep)))
    for t in removed:
        print(f"removed CT {t.vmid}\t{t.name}")
    print(f"{len(removed)} unused image template(s) removed")
    return 0


def register(sub: Any) -> None:
    """``proxmox-lxcri pve-images ls|prune``: the node's image templates."""
    def wrap(handler: Any) -> Any:
        def run(args: argparse.Namespace) -> int:
            try:
                return int(handler(args))
            except errdefs.ErrdefsError as exc:
                sys.stderr.write(f"proxmox-lxcri: {exc}\n")
                return 1
        return run

    p = sub.add_parser("pve-images", help="the Proxmox backend's image templates on this node")
    isub = p.add_subparsers(dest="pve_images_command", required=True)
    for name, help, handler in (
            ("ls", "list the image templates and the CTs linked to each", cmd_images_ls),
            ("prune", "destroy the image templates no CT is linked to", cmd_images_prune)):
        q = isub.add_parser(name, help=help)
        q.add_argument("--config", help="config.toml with the [proxmox] section (default "
                                        "$PROXMOX_LXCRI_CONFIG or "
                                        "/etc/proxmox-lxcri/config.toml)")
        if name == "ls":
            q.add_argument("--json", action="store_true", help="machine-readable output")
        else:
            q.add_argument("--keep", type=int, default=0, metavar="N",
                           help="keep the N most recently used unused ones (default 0)")
        q.set_defaults(func=wrap(handler))
