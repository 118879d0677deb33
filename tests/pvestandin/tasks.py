"""Worker tasks and their UPIDs, as pvedaemon's ``fork_worker`` makes them.

UPID format (pve-common ``src/PVE/Tools.pm`` ``upid_encode``/``upid_decode``):
``UPID:<node>:<pid %08X>:<pstart %08X>:<starttime %08X>:<type>:<id>:<user>:`` — upper-case hex,
a trailing colon; ``user`` is ``user@realm!tokenid`` for a token (pve-common
``src/PVE/RESTEnvironment.pm`` ``fork_worker`` passes the token-qualified user). The status
(pve-manager ``PVE/API2/Tasks.pm`` ``read_task_status``) is ``running`` while the worker lives,
then ``stopped`` with ``exitstatus`` taken from the log's last line: ``TASK OK`` → ``OK``,
``TASK ERROR: msg`` → ``msg`` (pve-common ``PVE::Tools::upid_read_status``).

Here a worker is an asyncio task in the stand-in. Its pid is a made-up number (unique per
stand-in), its pstart the stand-in's own process start time, so every UPID is unique and of
the real shape. ``delay`` (seconds, per worker type or ``*``) is slept before the body runs,
to imitate slow nodes; ``hold`` (a set of types) keeps a worker running until released.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

UPID_RE = re.compile(
    r"UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):"
    r"([0-9A-Fa-f]{8}):([^:\s]+):([^:\s]*):([^:\s]+):$")


class TaskFailed(Exception):
    """The worker's ``die``: becomes ``TASK ERROR: <text>`` and the task's exitstatus."""


def _own_pstart() -> int:
    # Field 22 of /proc/self/stat: start time in clock ticks since boot (what PVE records).
    try:
        return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


@dataclass
class Task:
    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str            # user@realm (without the token)
    tokenid: str | None
    log: list[str] = field(default_factory=list)
    exitstatus: str | None = None
    endtime: int | None = None
    job: asyncio.Task[None] | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def running(self) -> bool:
        return self.exitstatus is None

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {
            "upid": self.upid, "node": self.node, "pid": self.pid, "pstart": self.pstart,
            "starttime": self.starttime, "type": self.type, "id": self.id, "user": self.user,
            "status": "running" if self.running else "stopped"}
        if self.tokenid:
            out["tokenid"] = self.tokenid
        if not self.running:
            out["exitstatus"] = self.exitstatus
        return out

    def list_entry(self) -> dict[str, object]:
        out = self.status()
        if self.endtime is not None:
            out["endtime"] = self.endtime
            out["status"] = self.exitstatus  # the task list shows the exit status as status
        return out


Body = Callable[[Task], Awaitable[None]]


class Tasks:
    def __init__(self, node: str, delay: dict[str, float] | None = None) -> None:
        self.node = node
        self.delay = dict(delay or {})
        self.hold: set[str] = set()
        self.tasks: dict[str, Task] = {}
        self._pids = itertools.count((os.getpid() << 8) & 0x7FFFFFFF or 1)
        self._pstart = _own_pstart()

    def start(self, wtype: str, wid: str, authid: str, body: Body) -> Task:
        """Mint a UPID and run ``body`` as the worker; returns at once (like fork_worker)."""
        user, _, token = authid.partition("!")
        now = int(time.time())
        pid = next(self._pids)
        upid = (f"UPID:{self.node}:{pid:08X}:{self._pstart:08X}:{now:08X}:{wtype}:{wid}:"
                f"{authid}:")
        task = Task(upid=upid, node=self.node, pid=pid, pstart=self._pstart, starttime=now,
                    type=wtype, id=wid, user=user, tokenid=token or None)
        self.tasks[upid] = task
        task.job = asyncio.get_running_loop().create_task(self._run(task, body))
        return task

    async def _run(self, task: Task, body: Body) -> None:
        try:
            delay = self.delay.get(task.type, self.delay.get("*", 0.0))
            if delay:
                await asyncio.sleep(delay)
            if task.type in self.hold:
                await task.release.wait()
            await body(task)
        except TaskFailed as e:
            msg = str(e).rstrip("\n")
            task.log.append(f"TASK ERROR: {msg}")
            task.exitstatus = msg
        except asyncio.CancelledError:
            # DELETE /nodes/{node}/tasks/{upid} kills the worker; PVE then reads no final
            # line and reports "unexpected status" (PVE::Tools::upid_read_status).
            task.exitstatus = "unexpected status"
            raise
        except Exception as e:  # a bug in the stand-in still ends the task, visibly
            task.log.append(f"TASK ERROR: internal error in stand-in: {e!r}")
            task.exitstatus = f"internal error in stand-in: {e!r}"
        else:
            task.log.append("TASK OK")
            task.exitstatus = "OK"
        finally:
            task.endtime = int(time.time())

    def get(self, upid: str) -> Task | None:
        return self.tasks.get(upid)

    def active(self) -> list[Task]:
        return [t for t in self.tasks.values() if t.running]

    async def wait_all(self, timeout: float = 60.0) -> None:
        jobs = [t.job for t in self.tasks.values() if t.job is not None and not t.job.done()]
        for t in self.tasks.values():
            t.release.set()
        if jobs:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait(jobs, timeout=timeout)
