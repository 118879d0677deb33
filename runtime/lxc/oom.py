"""One ``TaskOOM`` per OOM kill in a container's memory cgroup, as containerd's runc shim
reports it.

The truth is the kernel's ``oom_kill`` counter: ``memory.oom_control`` on cgroup v1 (kernel
4.13 and later), ``memory.events`` on v2 (cgroup-v1/memory.rst "OOM control", cgroup-v2.rst
"memory.events"). What wakes the watcher differs:

- **v1**: an eventfd registered through ``cgroup.event_control``. The kernel signals it each
  time a task of the cgroup enters the OOM path and takes the OOM lock, *before* the OOM killer
  picks a victim, and again while the victim is dying (one kill measured 83 notifications on
  this host's 6.18 kernel), and once more when the cgroup is removed. A notification is
  therefore only a hint: the watcher then follows the counter for a moment and reports what it
  counted.
- **v2**: inotify on ``memory.events``, which the kernel marks modified when a counter changes
  (after the kill is counted).

When the container ends, the backend awaits :meth:`OomWatch.settle` before it reports the exit,
so that an OOM kill is published before the task's exit, as with runc (the CRI plugin then
gives the container the reason ``OOMKilled``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from runtime import cgroups
from runtime.stdio import fd_ready

log = logging.getLogger(__name__)

#: How long a v1 notification is followed for the counter to move. The OOM killer counts its
#: kill right after the notification; a notification not followed by a kill (a task that
#: entered the OOM path while a victim was already dying) is dropped after this.
FOLLOW = 1.0
#: A notification that could not be matched because the cgroup went away meanwhile counts as a
#: kill, unless a kill was counted this recently (it was the dying victim's tail).
TAIL = 1.0


class OomWatch:
    """Watches one container's memory cgroup (v1 directory, or the v2 one)."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._task: asyncio.Task[None] | None = None
        self._last_kill = 0.0
        self._settle = 0.0
        #: v1: the eventfd, and whether a notification is being followed.
        self._efd: int | None = None
        self._busy = False

    def start(self, cg: cgroups.Cgroups) -> None:
        mem = cg.v1.get("memory")
        loop = asyncio.get_running_loop()
        if mem is not None:
            self._task = loop.create_task(self._watch_v1(mem))
            # The cgroup's removal signals the eventfd (cgroup-v1/cgroups.rst: "when the
            # cgroup is removed"), which ends the watcher promptly.
            self._settle = 1.0
        elif cg.v2 is not None:
            self._task = loop.create_task(self._watch_v2(cg.v2))
            # memory.events is written when the kill is counted, long before the exit is
            # seen; nothing reliably wakes the watcher at removal, so only let it run once.
            self._settle = 0.02

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def settle(self) -> None:
        """Let the watcher finish with a cgroup that is going away (the container exited):
        the removal wakes it (v1), and it reports the kills it has not reported yet."""
        if self._task is None or self._task.done():
            return
        if self._efd is not None and not self._busy and not _readable(self._efd):
            # v1, idle, nothing signalled: every OOM notification (signalled when the kernel
            # enters the OOM path, long before the exit) has been dealt with; the removal's
            # own signal would add nothing (measured: it comes up to 18 ms after the exit).
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(self._settle):
                await asyncio.shield(self._task)

    def _kills(self, n: int) -> None:
        for _ in range(n):
            self._callback()
        if n:
            self._last_kill = time.monotonic()

    async def _watch_v1(self, mem: Path) -> None:
        control_file = mem / "memory.oom_control"
        first = cgroups.read_flat(control_file)
        counted = "oom_kill" in first  # absent before Linux 4.13
        seen = first.get("oom_kill", 0)
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            ctl = os.open(control_file, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            os.close(efd)
            log.warning("cannot watch OOM events in %s: %s", mem, exc)
            return
        self._efd = efd
        try:
            # One write(2) of "<eventfd> <fd of memory.oom_control>" (cgroup-v1/memory.rst).
            control = os.open(mem / "cgroup.event_control", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(control, f"{efd} {ctl}".encode())
            finally:
                os.close(control)
            while True:
                await fd_ready(efd)
                try:
                    count = os.eventfd_read(efd)
                except BlockingIOError:
                    continue
                if not control_file.exists():
                    # The cgroup is gone: its removal signalled once; any other signal
                    # read with it was an OOM notification whose kill could not be counted.
                    if count > 1:
                        self._unmatched()
                    return
                if not counted:
                    # No counter: one event per wake-up, however many notifications it was.
                    self._kills(1)
                    continue
                self._busy = True
                try:
                    seen, gone = await self._follow(control_file, seen)
                finally:
                    self._busy = False
                if gone:
                    return
        except OSError as exc:
            log.warning("cannot watch OOM events in %s: %s", mem, exc)
        finally:
            self._efd = None
            os.close(efd)
            os.close(ctl)

    def _unmatched(self) -> None:
        """The cgroup went before the counter could be read after a notification: that
        notification was almost certainly the kill that ended the container, unless a kill was
        counted just before (then it was the dying victim's tail)."""
        if time.monotonic() - self._last_kill > TAIL:
            self._kills(1)

    async def _follow(self, control_file: Path, seen: int) -> tuple[int, bool]:
        """After a notification: report the kills the counter shows within FOLLOW seconds.
        Returns the new count and whether the cgroup is gone."""
        deadline = time.monotonic() + FOLLOW
        while True:
            flat = cgroups.read_flat(control_file)
            if not flat:
                self._unmatched()
                return seen, True
            now = flat.get("oom_kill", seen)
            if now > seen:
                self._kills(now - seen)
                return now, False
            if time.monotonic() > deadline:
                return seen, False
            await asyncio.sleep(0.005)

    async def _watch_v2(self, path: Path) -> None:
        events = path / "memory.events"
        seen = cgroups.read_flat(events).get("oom_kill", 0)
        fd = _inotify(events)
        if fd is None:
            return
        try:
            while True:
                await fd_ready(fd)
                try:
                    os.read(fd, 4096)
                except BlockingIOError:
                    continue
                now = cgroups.read_flat(events).get("oom_kill", seen)
                self._kills(max(now - seen, 0))
                seen = max(seen, now)
                if not events.exists():
                    return
        finally:
            os.close(fd)


def _readable(fd: int) -> bool:
    """Whether ``fd`` has something to read now (poll(2) with no wait)."""
    import select

    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


_IN_MODIFY, _IN_DELETE_SELF = 0x2, 0x400


def _inotify(path: Path) -> int | None:
    """An inotify fd watching ``path`` for modification (inotify(7), through libc: the
    standard library has no binding)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        log.warning("inotify_init1: %s", os.strerror(ctypes.get_errno()))
        return None
    if libc.inotify_add_watch(fd, str(path).encode(), _IN_MODIFY | _IN_DELETE_SELF) < 0:
        log.warning("cannot watch %s: %s", path, os.strerror(ctypes.get_errno()))
        os.close(fd)
        return None
    return int(fd)
