"""``proxmox-lxcri`` storage commands: checkpoint, restore, checkpoints, images, storage.

    proxmox-lxcri checkpoint ID [--criu | --no-criu] [--exit]
    proxmox-lxcri restore ID [--snapshot NAME] [--processes]
    proxmox-lxcri checkpoints ID [--delete NAME] [--json]
    proxmox-lxcri images ls [--json]
    proxmox-lxcri images prune
    proxmox-lxcri storage [--json]          pool health, dataset usage, operation metrics

They act on ``<pool>/containers/<ID>`` of the pool the configuration names (``--config``, else
``$PROXMOX_LXCRI_CONFIG`` or /etc/proxmox-lxcri/config.toml), directly through ZFS: a
checkpoint or restore of a running container needs nothing from its shim. The init's PID, for
CRIU, comes from the shim's state snapshot. Commands run with ``subprocess`` in a worker thread
(:class:`~storage.runner.ThreadRunner`): this is not the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from runtime import config as runtime_config
from runtime.errdefs import ErrdefsError, FailedPrecondition
from runtime.lxc.criu_stdio import KEYS_FILE
from storage import metrics
from storage import settings as storage_settings
from storage.drivers import open_driver
from storage.runner import ThreadRunner
from storage.service import ZfsStorage
from storage.settings import StorageSettings
from storage.zfs_parse import format_size

Handler = Callable[[argparse.Namespace, ZfsStorage, StorageSettings], Coroutine[Any, Any, int]]


def _state_root() -> Path:
    return Path(os.environ.get("PROXMOX_LXCRI_ROOT") or "/run/proxmox-lxcri")


def _events_path() -> Path:
    return _state_root() / "runtime" / "events.log"


def _open(args: argparse.Namespace) -> tuple[ZfsStorage, StorageSettings]:
    raw = runtime_config.load(Path(args.config) if args.config else None)
    settings = storage_settings.from_section(runtime_config.section(raw, "storage"))
    if settings.pool is None:
        raise FailedPrecondition("no ZFS pool configured ([storage] zfs_pool in "
                                 f"{args.config or runtime_config.default_path()})")
    runner = ThreadRunner()
    storage = ZfsStorage(open_driver(runner, settings.driver), runner, settings.pool,
                         metrics.EventLog(_events_path()))
    return storage, settings


def _init_pid(id: str) -> int | None:
    """The container's init PID from the shim's state snapshot (any namespace)."""
    base = _state_root() / "containers"
    for state in base.glob(f"*/{id}/state.json"):
        try:
            data = json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        pid = int(data.get("pid") or 0)
        if pid > 0 and data.get("status") in ("running", "created", "paused"):
            return pid
    return None


def _when(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _emit(args: argparse.Namespace, rows: list[dict[str, Any]], fmt: str,
          columns: list[str]) -> None:
    if getattr(args, "json", False):
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    print(fmt.format(*[c.upper() for c in columns]))
    for r in rows:
        print(fmt.format(*[("-" if r[c] is None else r[c]) for c in columns]))


# -- commands -----------------------------------------------------------------------------------


def shim_container_dumper(id: str) -> Callable[[Path], Coroutine[Any, Any, None]] | None:
    """For a container the shim runs, a "dumper" that refuses with the way to do it: its
    processes can only be dumped by the shim, through LXC (the Task API's Checkpoint), not by a
    plain ``criu dump`` of its PID from here. None for any other container."""
    if not any((_state_root() / "containers").glob(f"*/{id}/state.json")):
        return None

    async def refuse(images: Path) -> None:
        raise FailedPrecondition(
            f"container {id} is run by the proxmox-lxcri shim: its processes are checkpointed "
            "by the Task API's Checkpoint (ctr task checkpoint), which the shim performs with "
            "LXC; this command takes filesystem checkpoints of it (--no-criu)")

    return refuse


async def cmd_checkpoint(args: argparse.Namespace, storage: ZfsStorage,
                         settings: StorageSettings) -> int:
    use_criu = True if args.criu else (False if args.no_criu else None)
    pid = _init_pid(args.id)
    started = time.monotonic()
    cp = await storage.checkpoint(args.id, settings, pid=pid, use_criu=use_criu,
                                  leave_running=not args.exit,
                                  dumper=shim_container_dumper(args.id))
    took = time.monotonic() - started
    if args.exit and pid and not cp.criu:
        os.kill(pid, signal.SIGKILL)
    kind = "filesystem and processes (CRIU)" if cp.criu else "filesystem"
    print(f"{cp.name}\t{kind}\t{took * 1000:.1f} ms")
    return 0


async def cmd_restore(args: argparse.Namespace, storage: ZfsStorage,
                      settings: StorageSettings) -> int:
    started = time.monotonic()
    cp, newer = await storage.restore(args.id, args.snapshot)
    took = time.monotonic() - started
    print(f"restored {cp.name}\t{took * 1000:.1f} ms"
          + (f"\tdestroyed newer: {', '.join(newer)}" if newer else ""))
    if args.processes:
        if cp.criu and (Path(cp.criu) / KEYS_FILE).exists():
            raise FailedPrecondition(
                f"{cp.name} holds the processes of a container of the proxmox-lxcri shim, "
                "dumped with LXC: they are restored by creating a task from the checkpoint "
                "(the Task API, e.g. ctr containers restore), not by this command; its files "
                "were restored")
        pid = await storage.restore_processes(cp)
        print(f"processes resumed, pid {pid}")
    return 0


async def cmd_checkpoints(args: argparse.Namespace, storage: ZfsStorage,
                          settings: StorageSettings) -> int:
    if args.delete:
        cp = await storage.checkpoints.remove(args.id, args.delete)
        print(f"deleted {cp.name}")
        return 0
    rows = [{"name": c.name, "created": _when(c.created), "used": format_size(c.used),
             "referenced": format_size(c.referenced), "criu": "yes" if c.criu else "no",
             "held": "containerd" if c.exported else "-", "snapshot": c.snapshot}
            for c in await storage.checkpoints.list_for(args.id)]
    _emit(args, rows, "{:<26} {:<21} {:>8} {:>10} {:<4} {:<10}",
          ["name", "created", "used", "referenced", "criu", "held"])
    return 0


async def cmd_images_ls(args: argparse.Namespace, storage: ZfsStorage,
                        settings: StorageSettings) -> int:
    rows = [{"key": i.key, "size": format_size(i.referenced), "used": format_size(i.used),
             "users": len(i.users), "created": _when(i.created),
             "ready": "yes" if i.ready else "populating", "containers": list(i.users),
             "source": i.source}
            for i in await storage.images.scan()]
    _emit(args, rows, "{:<26} {:>8} {:>8} {:>5} {:<21} {:<10}",
          ["key", "size", "used", "users", "created", "ready"])
    return 0


async def cmd_images_prune(args: argparse.Namespace, storage: ZfsStorage,
                           settings: StorageSettings) -> int:
    pruned = await storage.images.prune()
    for i in pruned:
        print(f"pruned {i.key}\t{format_size(i.used)}")
    print(f"{len(pruned)} image(s) pruned, "
          f"{format_size(sum(i.used for i in pruned))} freed")
    return 0


async def cmd_storage(args: argparse.Namespace, storage: ZfsStorage,
                      settings: StorageSettings) -> int:
    pool = await storage.pool_status()
    usage = await storage.usage()
    summary = metrics.summarise(_events_path()).rows()
    if args.json:
        json.dump({"pool": vars(pool), "driver": storage.driver.kind,
                   "datasets": [{"name": d.name, "used": d.used, "referenced": d.referenced,
                                 "quota": d.quota, "available": d.available,
                                 "origin": d.origin} for d in usage],
                   "operations": summary}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(f"pool {pool.name}: {pool.health}, {format_size(pool.allocated)} used of "
          f"{format_size(pool.size)} ({format_size(pool.free)} free), driver "
          f"{storage.driver.kind}")
    print()
    print("{:<40} {:>8} {:>8} {:>8}".format("DATASET", "USED", "REFER", "QUOTA"))
    for d in usage:
        print("{:<40} {:>8} {:>8} {:>8}".format(d.name, format_size(d.used),
                                                format_size(d.referenced),
                                                format_size(d.quota) if d.quota else "none"))
    print()
    print("{:<16} {:>6} {:>7} {:>10} {:>10}".format("OPERATION", "OK", "FAILED", "MEDIAN ms",
                                                      "LAST ms"))
    for r in summary:
        med = "-" if r["median_s"] is None else f"{r['median_s'] * 1000:.1f}"
        last = "-" if r["last_s"] is None else f"{r['last_s'] * 1000:.1f}"
        print("{:<16} {:>6} {:>7} {:>10} {:>10}".format(r["event"], r["ok"], r["failed"], med,
                                                        last))
    return 0


def _wrap(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            storage, settings = _open(args)
            return asyncio.run(handler(args, storage, settings))
        except ErrdefsError as exc:
            sys.stderr.write(f"proxmox-lxcri: {exc}\n")
            return 1
    return run


def register(sub: Any) -> None:
    """Add the storage commands to the operator CLI's subparsers."""
    def parser(name: str, help: str, handler: Handler, target: Any = sub) -> Any:
        p = target.add_parser(name, help=help)
        p.add_argument("--config", help="config.toml to read (default $PROXMOX_LXCRI_CONFIG or "
                                        "/etc/proxmox-lxcri/config.toml)")
        p.set_defaults(func=_wrap(handler))
        return p

    p = parser("checkpoint", "checkpoint a container: ZFS snapshot (+ CRIU where it works)",
               cmd_checkpoint)
    p.add_argument("id")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--criu", action="store_true",
                      help="also dump the processes; fail if CRIU does not work here")
    mode.add_argument("--no-criu", action="store_true", help="filesystem only")
    p.add_argument("--exit", action="store_true", help="stop the container afterwards")

    p = parser("restore", "roll a container back to a checkpoint (default: the latest)",
               cmd_restore)
    p.add_argument("id")
    p.add_argument("--snapshot", metavar="NAME", help="checkpoint name, e.g. checkpoint-1764139200")
    p.add_argument("--processes", action="store_true",
                   help="also resume the processes a CRIU checkpoint dumped")

    p = parser("checkpoints", "list (or delete) a container's checkpoints", cmd_checkpoints)
    p.add_argument("id")
    p.add_argument("--delete", metavar="NAME", help="delete this checkpoint")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    images = sub.add_parser("images", help="cached images in the ZFS pool")
    isub = images.add_subparsers(dest="images_command", required=True)
    p = parser("ls", "list cached images with size and users", cmd_images_ls, isub)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    parser("prune", "destroy cached images no container uses", cmd_images_prune, isub)

    p = parser("storage", "pool health, dataset usage and storage metrics", cmd_storage)
    p.add_argument("--json", action="store_true", help="machine-readable output")
