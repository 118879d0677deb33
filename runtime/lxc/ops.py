"""What a running LXC container offers besides its lifecycle: exec, terminal, pause/resume,
statistics, resource updates and OOM notification (the optional capabilities of
``runtime.backend``). Mixed into ``LxcContainer``; state lives there.

All of it works on the container's cgroups directly (runtime.cgroups), from the init's host
PID, which is guarded to be the container's payload cgroup (its cgroupsPath, or LXC's
``lxc.payload.<name>``) so that nothing here can touch another process's cgroup (a reused PID).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime import cgroups, errdefs
from runtime.lxc import cgroup, state
from runtime.lxc.exec import AttachContext, LxcExec, in_our_pid_ns, start_exec
from runtime.lxc.oom import OomWatch
from runtime.stdio import ProcessIO, TerminalIO
from runtime.types import ExecConfig

log = logging.getLogger(__name__)

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
    _oom: OomWatch | None = None

    def _live_cgroups(self) -> cgroups.Cgroups:
        mounts = cgroups.read_mounts()  # once for both (every create runs this, watch_oom)
        cg = cgroups.of_pid(self._st.pid, mounts)
        roots = cgroup.hierarchy_roots(mounts)
        if not any(cgroup.is_payload(str(p.relative_to(r)), self._st.name, self._st.cgroup)
                   for p in [*cg.v1.values(), *([cg.v2] if cg.v2 else [])]
                   for r in roots if p.is_relative_to(r)):
            raise errdefs.NotFound(f"container {self._st.name}: no cgroup (not running)")
        return cg

    # -- exec, terminal ---------------------------------------------------------------------

    async def exec(self, config: ExecConfig) -> LxcExec:
        if self.attach is None:
            raise errdefs.NotImplementedErr("exec: lxc-attach is not available")
        if cgroups.is_frozen(self._live_cgroups()):
            # runc refuses it too ("cannot exec in a paused container"); lxc-attach would
            # hang until the container is resumed.
            raise errdefs.FailedPrecondition(
                f"container {self._st.name} is paused: resume it before exec")
        return await start_exec(self.attach, config,
                                shared_pid_ns=in_our_pid_ns(self._st.pid))

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
        """Apply what can change live of the full ``LinuxResources`` (CRI sends all of it,
        devices included); see :func:`runtime.cgroups.update_writes`."""
        cgroups.check_resources(resources)
        writes, notes = cgroups.update_writes(self._live_cgroups(), resources)
        for note in notes:
            log.debug("update of %s: %s", self._st.name, note)
        for w in writes:
            # Each write is one small syscall on cgroupfs; no await needed between them.
            cgroups.write_value(w.path, w.value, f"resources.{w.field}")

    # -- OOM ------------------------------------------------------------------------------------

    def watch_oom(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once per OOM kill in the container (:mod:`runtime.lxc.oom`)."""
        try:
            cg = self._live_cgroups()
        except errdefs.NotFound:
            return
        self._oom = OomWatch(callback)
        self._oom.start(cg)

    def stop_oom_watch(self) -> None:
        if self._oom is not None:
            self._oom.stop()
            self._oom = None

    async def _oom_settled(self) -> None:
        """Before the exit is reported: the OOM kills of the ending container are."""
        if self._oom is not None:
            await self._oom.settle()
