"""``proxmox-lxcri`` storage commands: checkpoint, restore, checkpoints, images, storage.

    proxmox-lxcri checkpoint ID [--criu | --no-criu] [--exit]
    proxmox-lxcri restore ID [--snapshot NAME] [--processes]
    proxmox-lxcri checkpoints ID [--delete NAME] [--json]
    proxmox-lxcri images ls [--json]
    proxmox-lxcri images prune
    proxmox-lxcri storage [--json]          pool health, dataset usage, operation metrics

They act on ``<pool>/containers/<ID>`` directly through ZFS: a checkpoint or restore of a
running container needs nothing from its shim. The pool of a container a shim put on ZFS is the
one its storage state records (``<state root>/containers/<ns>/<ID>/storage.json``, written by
storage/provisioner.py), whatever config file the shim read it from; otherwise, and for the
commands without a container, the pool the configuration names (``--config``, else
``$PROXMOX_LXCRI_CONFIG`` or /etc/proxmox-lxcri/config.toml). The init's PID, for
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
from dataclasses import replace
from pathlib import Path
from typing import Any

from runtime import config as runtime_config
from runtime.errdefs import ErrdefsError, FailedPrecondition, InvalidArgument
from runtime.lxc.criu_stdio import KEYS_FILE
from storage import metrics
from storage import settings as storage_settings
from storage.drivers import open_driver
from storage.layout import check_pool
from storage.runner import ThreadRunner
from storage.service import ZfsStorage
from storage.settings import DRIVERS, StorageSettings
from storage.state import read_state
from storage.zfs_parse import format_size

Handler = Callable[[argparse.Namespace, ZfsStorage, StorageSettings], Coroutine[Any, Any, int]]


def _state_root() -> Path:
    return Path(os.environ.get("PROXMOX_LXCRI_ROOT") or "/run/proxmox-lxcri")


def _events_path() -> Path:
    return _state_root() / "runtime" / "events.log"


def _container_dirs(id: str, namespace: str | None = None) -> list[Path]:
    """The shim state directories of container ``id`` (one per namespace that has it). The id
    comes from the command line: never a path or a pattern."""
    if not id or id in (".", "..") or "/" in id or "\0" in id:
        raise InvalidArgument(f"{id!r} is not a container id")
    base = _state_root() / "containers"
    if namespace is not None:
        if not namespace or namespace in (".", "..") or "/" in namespace or "\0" in namespace:
            raise InvalidArgument(f"{namespace!r} is not a namespace")
        spaces = [base / namespace]
    else:
        try:
            spaces = sorted(p for p in base.iterdir() if p.is_dir())
        except OSError:
            spaces = []
    return [d for d in (ns / id for ns in spaces) if d.is_dir()]


def _recorded_storage(id: str, namespace: str | None) -> tuple[str, str] | None:
    """(pool, driver) the storage state of container ``id`` records, or None. Two namespaces
    that both have an ``id`` on different pools need ``--namespace``."""
    found: dict[tuple[str, str], list[str]] = {}
    for d in _container_dirs(id, namespace):
        state = read_state(d)
        if not state or not isinstance(state.get("pool"), str):
            continue
        pool = check_pool(state["pool"])
        driver = state.get("driver")
        found.setdefault((pool, driver if driver in DRIVERS else "auto"), []).append(d.parent.name)
    if len(found) > 1:
        spaces = sorted(ns for names in found.values() for ns in names)
        raise FailedPrecondition(f"container {id} exists in namespaces {', '.join(spaces)} on "
                                 "different pools: name one with --namespace")
    return next(iter(found), None)


def _open(args: argparse.Namespace) -> tuple[ZfsStorage, StorageSettings]:
    raw = runtime_config.load(Path(args.config) if args.config else None)
    settings = storage_settings.from_section(runtime_config.section(raw, "storage"))
    id = getattr(args, "id", None)
    recorded = (_recorded_storage(id, getattr(args, "container_namespace", None)) if id
                else None)
    if recorded is not None:
        # The container lives where its shim put it; the configuration's other settings
        # (checkpoint_keep, criu …) still apply.
        pool, driver = recorded
        settings = replace(settings, pool=pool,
                           driver=driver if settings.pool != pool else settings.driver)
    if settings.pool is None:
        where = f"{args.config or runtime_config.default_path()}"
        if id:
            raise FailedPrecondition(
                f"container {id} has no ZFS dataset recorded under {_state_root()}/containers "
                f"and no ZFS pool is configured ([storage] zfs_pool in {where})")
        raise FailedPrecondition(f"no ZFS pool configured ([storage] zfs_pool in {where})")
    runner = ThreadRunner()
    storage = ZfsStorage(open_driver(runner, settings.driver), runner, settings.pool,
                         metrics.EventLog(_events_path()))
    return storage, settings


def _init_pid(id: str, namespace: str | None = None) -> int | None:
    """The container's init PID from the shim's state snapshot (any namespace, or the one
    given)."""
    for d in _container_dirs(id, namespace):
        try:
            data = json.loads((d / "state.json").read_text())
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
    if not any((d / "state.json").exists() for d in _container_dirs(id)):
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
    pid = _init_pid(args.id, args.container_namespace)
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


def _proxmox(args: argparse.Namespace) -> int | None:
    """checkpoint, checkpoints and restore of a container of the Proxmox backend (its state
    directory holds ``pve-state.json``): Proxmox snapshots through the API
    (runtime/proxmox/opcli.py), not ZFS datasets. None for any other container."""
    id = getattr(args, "id", None)
    if not id or args.command not in ("checkpoint", "checkpoints", "restore"):
        return None
    from runtime.proxmox import opcli

    st = opcli.find(_container_dirs(id, getattr(args, "container_namespace", None)))
    if st is None:
        return None
    if args.command == "restore":
        return opcli.restore(id, st, args.snapshot, args.processes)
    if args.command == "checkpoints":
        return opcli.list_checkpoints(id, st, args.json, args.delete)
    if args.criu:
        raise FailedPrecondition(f"container {id} (CT {st.vmid}) runs on the Proxmox backend: "
                                 "its checkpoints are filesystem snapshots only (no CRIU)")
    raw = runtime_config.load(Path(args.config) if args.config else None)
    return opcli.checkpoint(id, st, opcli.checkpoint_keep(raw), exit=args.exit)


def _wrap(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            done = _proxmox(args)
            if done is not None:
                return done
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

    def container(p: Any) -> None:
        p.add_argument("id")
        # Its own dest: the OCI commands' global --namespace defaults to "cli", which is not
        # where the shim's containers are.
        p.add_argument("--namespace", dest="container_namespace", metavar="NS",
                       help="the container's containerd namespace, when the id is in several "
                            "(default: any)")

    p = parser("checkpoint", "checkpoint a container: ZFS snapshot (+ CRIU where it works)",
               cmd_checkpoint)
    container(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--criu", action="store_true",
                      help="also dump the processes; fail if CRIU does not work here")
    mode.add_argument("--no-criu", action="store_true", help="filesystem only")
    p.add_argument("--exit", action="store_true", help="stop the container afterwards")

    p = parser("restore", "roll a container back to a checkpoint (default: the latest)",
               cmd_restore)
    container(p)
    p.add_argument("--snapshot", metavar="NAME", help="checkpoint name, e.g. checkpoint-1764139200")
    p.add_argument("--processes", action="store_true",
                   help="also resume the processes a CRIU checkpoint dumped")

    p = parser("checkpoints", "list (or delete) a container's checkpoints", cmd_checkpoints)
    container(p)
    p.add_argument("--delete", metavar="NAME", help="delete this checkpoint")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    images = sub.add_parser("images", help="cached images in the ZFS pool")
    isub = images.add_subparsers(dest="images_command", required=True)
    p = parser("ls", "list cached images with size and users", cmd_images_ls, isub)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    parser("prune", "destroy cached images no container uses", cmd_images_prune, isub)

    p = parser("storage", "pool health, dataset usage and storage metrics", cmd_storage)
    p.add_argument("--json", action="store_true", help="machine-readable output")
