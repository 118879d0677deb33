"""What a running LXC container offers besides its lifecycle: exec, terminal, pause/resume,
statistics, resource updates and OOM notification (the optional capabilities of
``runtime.backend``). Mixed into ``LxcContainer``; state lives there.

All of it works on the container's cgroups directly (runtime.cgroups), from the init's host
PID, which is guarded to be LXC's ``lxc.payload.<name>`` so that nothing here can touch another
process's cgroup (a reused PID).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime import cgroups, errdefs
from runtime.lxc import state
from runtime.lxc.exec import AttachContext, LxcExec, start_exec
from runtime.stdio import ProcessIO, TerminalIO, fd_ready
from runtime.types import ExecConfig

log = logging.getLogger(__name__)

#: OCI LinuxResources fields Update can apply to a live container; anything else is refused.
_UPDATABLE = {"memory": {"limit", "swap", "reservation", "kernel", "kernelTCP", "swappiness",
                         "disableOOMKiller", "useHierarchy", "checkBeforeUpdate"},
              "cpu": {"shares", "quota", "period", "cpus", "mems", "realtimeRuntime",
                      "realtimePeriod", "burst", "idle"},
              "pids": {"limit"}, "blockIO": set(), "devices": set(), "hugepageLimits": set(),
              "network": set(), "rdma": set(), "unified": set()}


def _network_stats(pid: int) -> dict[str, dict[str, int]]:
    """/proc/<pid>/net/dev lists the interfaces of *that process's* network namespace
    (proc(5)), whichever way the container got it (its own, shim-managed, or CNI's)."""
    from network.stats import parse_net_dev

    try:
        text = Path(f"/proc/{pid}/net/dev").read_text()
    except OSError:
        return {}
    return {s.name: {k: v for k, v in dataclasses.asdict(s).items() if k != "name"}
            for s in parse_net_dev(text)}


class ContainerOps:
    _st: state.PersistedState
    _io: ProcessIO
    #: Set by LxcBackend.create once the container exists (None: exec unavailable).
    attach: AttachContext | None = None
    _oom_task: asyncio.Task[None] | None = None

    def _live_cgroups(self) -> cgroups.Cgroups:
        cg = cgroups.of_pid(self._st.pid)
        payload = f"lxc.payload.{self._st.name}"
        if not any(payload in p.parts for p in [*cg.v1.values(), *([cg.v2] if cg.v2 else [])]):
            raise errdefs.NotFound(f"container {self._st.name}: no cgroup (not running)")
        return cg

    # -- exec, terminal ---------------------------------------------------------------------

    async def exec(self, config: ExecConfig) -> LxcExec:
        if self.attach is None:
            raise errdefs.NotImplementedErr("exec: lxc-attach is not available")
        return await start_exec(self.attach, config)

    def resize(self, width: int, height: int) -> None:
        if isinstance(self._io, TerminalIO):
            self._io.resize(width, height)

    # -- pause ----------------------------------------------------------------------------------

    async def pause(self) -> None:
        cg = self._live_cgroups()
        cgroups.freeze(cg, True)
        # The freezer is asynchronous: FREEZING until every task is stopped (cgroup v1
        # freezer-subsystem.txt; v2 cgroup.events "frozen 1").
        for _ in range(200):
            if cgroups.is_frozen(cg):
                return
            await asyncio.sleep(0.005)
        log.warning("container %s still freezing after 1 s", self._st.name)

    async def resume(self) -> None:
        cgroups.freeze(self._live_cgroups(), False)

    # -- stats, update ----------------------------------------------------------------------------

    def stats(self) -> cgroups.Stats:
        stats = cgroups.read_stats(self._live_cgroups())
        return dataclasses.replace(stats, network=_network_stats(self._st.pid))

    async def update(self, resources: dict[str, Any]) -> None:
        for section, value in resources.items():
            allowed = _UPDATABLE.get(section)
            if allowed is None:
                raise errdefs.InvalidArgument(f"resources.{section}: unknown field")
            if not isinstance(value, dict) and value is not None:
                if isinstance(value, list) and not value:
                    continue
                raise errdefs.InvalidArgument(f"resources.{section}: must be an object")
            for key, v in (value or {}).items() if isinstance(value, dict) else []:
                if v is not None and key not in allowed:
                    raise errdefs.NotImplementedErr(
                        f"resources.{section}.{key}: cannot be updated on a running "
                        "LXC container")
        writes = cgroups.resource_writes(self._live_cgroups(), resources)
        for path, value, field in writes:
            # Each write is one small syscall on cgroupfs; no await needed between them.
            cgroups.write_value(path, value, f"resources.{field}")

    # -- OOM ------------------------------------------------------------------------------------

    def watch_oom(self, callback: Callable[[], None]) -> None:
        """v1: an eventfd registered on ``memory.oom_control`` through
        ``cgroup.event_control`` (cgroup-v1/memory.rst "OOM control"); v2: ``memory.events``'
        ``oom_kill`` counter, checked when the file changes (polled: inotify is not in the
        standard library)."""
        try:
            cg = self._live_cgroups()
        except errdefs.NotFound:
            return
        mem = cg.v1.get("memory")
        loop = asyncio.get_running_loop()
        if mem is not None:
            self._oom_task = loop.create_task(_watch_v1(mem, callback))
        elif cg.v2 is not None:
            self._oom_task = loop.create_task(_watch_v2(cg.v2, callback))

    def stop_oom_watch(self) -> None:
        if self._oom_task is not None:
            self._oom_task.cancel()
            self._oom_task = None


async def _watch_v1(mem: Path, callback: Callable[[], None]) -> None:
    efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    ctl = os.open(mem / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
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
            # The kernel signals the eventfd once per OOM in the memcg, *before* the OOM
            # killer runs (so oom_kill is not incremented yet), and once more when the cgroup
            # is removed (memcg v1 event removal). Both may be read together at exit.
            gone = not (mem / "memory.oom_control").exists()
            for _ in range(count - (1 if gone else 0)):
                callback()
            if gone:
                return
    except OSError as exc:
        log.warning("cannot watch OOM events in %s: %s", mem, exc)
    finally:
        os.close(efd)
        os.close(ctl)


async def _watch_v2(path: Path, callback: Callable[[], None]) -> None:
    """inotify on ``memory.events``, which the kernel marks modified when a counter changes
    (cgroup-v2.rst "memory.events"); polling would miss an OOM kill when LXC removes the cgroup
    right after the container's last process dies."""
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
            for _ in range(now - seen):
                callback()
            seen = max(seen, now)
            if not events.exists():
                return
    finally:
        os.close(fd)


_IN_MODIFY, _IN_DELETE_SELF = 0x2, 0x400
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC


def _inotify(path: Path) -> int | None:
    """An inotify fd watching ``path`` for modification (inotify(7), through libc: the
    standard library has no binding)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    if fd < 0:
        log.warning("inotify_init1: %s", os.strerror(ctypes.get_errno()))
        return None
    if libc.inotify_add_watch(fd, str(path).encode(), _IN_MODIFY | _IN_DELETE_SELF) < 0:
        log.warning("cannot watch %s: %s", path, os.strerror(ctypes.get_errno()))
        os.close(fd)
        return None
    return int(fd)
