"""What the RPC edge tells an operator about each request: a log line and a lifecycle event.

Every Task RPC gets one logfmt line when it ends (shim/log.py), with ``rpc``, ``container_id``,
``exec_id`` and ``duration``: info for the lifecycle RPCs, debug for the chatty ones that
containerd and CRI poll (State, Wait, Pids, Stats, Connect …), a warning when it failed. The
lifecycle RPCs also go to the event log under the state root (runtime/oplog.py, source
``task``) with their duration and outcome. While a request runs, every line logged on its behalf
names its container (:func:`shim.log.fields`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from runtime.oplog import OpLog
from shim import log as shimlog

log = logging.getLogger("shim.rpc")

#: RPC → event-log name. Create from a checkpoint is recorded as "restore".
LIFECYCLE = {"Create": "create", "Start": "start", "Kill": "kill", "Exec": "exec",
             "Delete": "delete", "Checkpoint": "checkpoint", "Pause": "pause",
             "Resume": "resume", "Update": "update"}

Handler = Callable[[Any, Any], Awaitable[Any]]


def go_duration(seconds: float) -> str:
    """A duration the way Go's time.Duration prints it (what containerd's own lines carry)."""
    if seconds >= 1:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f}".rstrip("0").rstrip(".") + "ms"
    return f"{seconds * 1e6:.0f}µs"


def event_name(rpc: str, req: Any) -> str | None:
    checkpoint: object = getattr(req, "checkpoint", "")
    if rpc == "Create" and checkpoint:
        return "restore"
    return LIFECYCLE.get(rpc)


def _outcome_fields(rpc: str, req: Any, resp: Any) -> dict[str, Any]:
    """Figures worth keeping with an event: the pid a create/start made, a kill's signal, the
    exit status a delete reported."""
    out: dict[str, Any] = {}
    if rpc == "Kill":
        out["signal"] = getattr(req, "signal", None)
        if getattr(req, "all", False):
            out["all"] = True
    pid: object = getattr(resp, "pid", 0)
    if rpc in ("Create", "Start", "Delete") and pid:
        out["pid"] = pid
    if rpc == "Delete" and resp is not None:
        out["exit_status"] = getattr(resp, "exit_status", None)
    return out


def observed(rpc: str, handler: Handler, oplog: OpLog, namespace: str) -> Handler:
    """``handler`` with its log line and, for a lifecycle RPC, its event."""
    info = rpc in LIFECYCLE

    async def run(req: Any, ctx: Any) -> Any:
        id = getattr(req, "id", "") or None
        exec_id = getattr(req, "exec_id", "") or None
        event = event_name(rpc, req)
        started = time.monotonic()
        with shimlog.fields(namespace=namespace, container_id=id, exec_id=exec_id):
            try:
                resp = await handler(req, ctx)
            except asyncio.CancelledError:
                took = time.monotonic() - started
                log.debug("%s cancelled", rpc, extra={"rpc": rpc, "duration": go_duration(took)})
                if event:
                    oplog.record(event, ok=False, seconds=took, error="cancelled",
                                 namespace=namespace, container_id=id, exec_id=exec_id)
                raise
            except Exception as exc:
                took = time.monotonic() - started
                log.log(logging.WARNING if info else logging.DEBUG, "%s failed: %s", rpc, exc,
                        extra={"rpc": rpc, "duration": go_duration(took), "error": str(exc)})
                if event:
                    oplog.record(event, ok=False, seconds=took, error=str(exc),
                                 namespace=namespace, container_id=id, exec_id=exec_id,
                                 **_outcome_fields(rpc, req, None))
                raise
            took = time.monotonic() - started
            log.log(logging.INFO if info else logging.DEBUG, "%s", rpc,
                    extra={"rpc": rpc, "duration": go_duration(took)})
            if event:
                oplog.record(event, ok=True, seconds=took, namespace=namespace,
                             container_id=id, exec_id=exec_id,
                             **_outcome_fields(rpc, req, resp))
            return resp

    return run
