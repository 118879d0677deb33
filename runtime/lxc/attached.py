"""A container taken up by another process than the one that made it (``LxcBackend.attach``).

The OCI CLI runs each command in its own process: ``create`` leaves the container held by its
gate (its init holds it: "gate hold") and exits; ``start``, ``kill``, ``exec``, ``pause``,
``ps`` … come later, each in a new process. They all drive this handle, which is
:class:`LxcContainer` rebuilt from the persisted state (runtime.lxc.state), so the CLI and
the shim run the very same code for signals, exec, the freezer and statistics. What differs
is only what a later process cannot have: the monitor is not its child (the init's end is
seen through a pidfd), and the gate is reached through its FIFO's path instead of the
creating process's fds.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from runtime import errdefs
from runtime.lxc import cleanup, gate, owninit, state
from runtime.lxc.backend import LxcContainer
from runtime.stdio import ProcessIO, fd_ready

#: lxc.json's exit status when the program ended and nobody saw how (its monitor is not this
#: process's child).
UNKNOWN_STATUS = 255


class AttachedContainer(LxcContainer):
    def __init__(self, st: state.PersistedState, state_dir: Path) -> None:
        if not state.is_alive(st.pid, st.pid_start_time):
            raise errdefs.NotFound(f"container {st.name}: process already finished")
        init_dir = state_dir / cleanup.OWN_INIT_DIR
        super().__init__(st, state_dir, None, None, ProcessIO(),
                         init_dir if init_dir.is_dir() else None)
        if not state.is_alive(st.pid, st.pid_start_time):  # the pidfd names another process
            self._exit.cancel()
            if self._pidfd is not None:
                os.close(self._pidfd)
            raise errdefs.NotFound(f"container {st.name}: process already finished")
        # Created until a start released the gate; the start removes the gate's FIFOs.
        self._started = not (state_dir / cleanup.GATE_START).exists()

    @property
    def created(self) -> bool:
        """Held before its program (the OCI "created" state)."""
        return not self._started and not self._exit.done()

    async def _wait_init(self) -> int:
        fd = os.pidfd_open(self._st.pid)
        try:
            await fd_ready(fd)  # a pidfd is readable once its process has exited
        finally:
            os.close(fd)
        recorded = state.load(self._state_dir)
        if recorded is not None and recorded.exit_status is not None:
            return recorded.exit_status
        return UNKNOWN_STATUS

    def _late_exec_fd(self) -> int | None:
        if self._init_dir is None:
            return None
        try:
            return owninit.open_exec_fifo(self._init_dir)
        except OSError:
            return None

    def _release_gate(self) -> None:
        if not gate.release(self._state_dir):
            raise errdefs.FailedPrecondition(f"container {self.name}: its start gate is gone")
        for name in (cleanup.GATE_START, cleanup.GATE_READY):
            (self._state_dir / name).unlink(missing_ok=True)

    def _abort_gate(self) -> None:
        cleanup.abort_gate(self._state_dir)

    async def delete(self) -> None:
        """What the ``delete`` action does (cleanup.cleanup): this process has no monitor
        to wait for, so it kills and waits by PID."""
        if self._deleted:
            return
        self.stop_oom_watch()
        await asyncio.to_thread(cleanup.cleanup, self._state_dir, Path(self._st.bundle))
        await self._stop_scope()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._deleted = True
