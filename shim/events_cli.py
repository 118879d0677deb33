"""``proxmox-lxcri events``: read the lifecycle event log (runtime/oplog.py).

    proxmox-lxcri events [--follow] [--json] [--tail N] [--source task|storage|…]

One line per event, oldest first::

    2026-12-06T12:50:33.994Z task    create      ok       201.3ms default/c1 pid=4242
    2026-12-06T12:50:40.102Z task    kill        FAILED     0.2ms default/c1 signal=9 error="…"

``--json`` prints the events as stored, one JSON object per line. ``--follow`` goes on printing
events as they are written (surviving the log's rotation) until interrupted; it first prints
the last ``--tail`` events already there (default 10, like ``tail -f``).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from collections.abc import Iterable
from typing import Any

#: Fields every event has, shown in the fixed columns of a line.
_FIXED = ("ts", "source", "event", "ok", "seconds", "namespace", "container_id", "exec_id")


def _when(ts: object) -> str:
    if not isinstance(ts, int | float):
        return "-"
    whole, ms = divmod(int(round(ts * 1000)), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"


def _ms(seconds: object) -> str:
    if isinstance(seconds, int | float) and not isinstance(seconds, bool):
        return f"{seconds * 1000:.1f}ms"
    return "-"


def format_event(item: dict[str, Any]) -> str:
    """One readable line. Every value came from a file other processes write: quoted where
    it holds anything but plain characters, so a line is always one line."""
    from shim.log import quote

    ok = item.get("ok")
    outcome = "ok" if ok is True else ("FAILED" if ok is False else "-")
    target = ""
    if item.get("container_id"):
        target = f"{quote(item.get('namespace') or '-')}/{quote(item['container_id'])}"
        if item.get("exec_id"):
            target += f" exec={quote(item['exec_id'])}"
    rest = " ".join(f"{quote(k)}={quote(item[k])}" for k in sorted(item)
                    if k not in _FIXED and k != "error")
    if "error" in item:
        rest = (rest + " " if rest else "") + f"error={quote(item['error'])}"
    parts = [_when(item.get("ts")), f"{quote(item.get('source', '-')):<7}",
             f"{quote(item.get('event', '-')):<11}", f"{outcome:<6}",
             f"{_ms(item.get('seconds')):>9}"]
    return " ".join(parts + [p for p in (target, rest) if p])


def _print(items: Iterable[dict[str, Any]], as_json: bool) -> None:
    for item in items:
        line = json.dumps(item, sort_keys=True) if as_json else format_event(item)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()  # --follow goes to pipes (grep, tee): each event when it happens


def cmd_events(args: argparse.Namespace) -> int:
    from runtime import oplog
    from runtime.store import state_root

    path = oplog.path_under(state_root())
    tail = args.tail if args.tail is not None else (10 if args.follow else None)
    if tail is None:
        old: Iterable[dict[str, Any]] = oplog.read(path, source=args.source)
    else:
        old = collections.deque(oplog.read(path, source=args.source), maxlen=max(tail, 0))
    try:
        _print(old, args.json)
        if args.follow:
            new = (e for e in oplog.follow(path)
                   if args.source is None or e.get("source") == args.source)
            _print(new, args.json)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `proxmox-lxcri events | head`
        return 0
    return 0


def register(sub: Any) -> None:
    """Add ``events`` to the operator CLI's subparsers."""
    p = sub.add_parser("events", help="the lifecycle event log: every create, start, kill, "
                                      "exec, delete, checkpoint … with its duration and outcome")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing events as they are written")
    p.add_argument("--json", action="store_true", help="one JSON object per line, as stored")
    p.add_argument("-n", "--tail", type=int, metavar="N",
                   help="only the last N events already logged (default: all; 10 with "
                        "--follow)")
    p.add_argument("--source", help="only events of this source (task, storage …)")
    p.set_defaults(func=cmd_events)
