"""The backend's side of the ``lxc.hook.start-host`` gate (``gate.sh``).

Protocol, over two FIFOs in the container's state dir:

1. Before the monitor runs, the backend makes ``gate-ready`` and ``gate-start`` and opens
   both ``O_RDWR`` (never blocks, fifo(7)); it holds the only writer of ``gate-start``.
2. The gate opens ``gate-start`` for reading, writes ``$LXC_PID`` + newline into ``gate-ready``
   and blocks reading one line from ``gate-start``.
3. :meth:`Gate.release` writes ``go``: the gate exits 0 and LXC runs the init (OCI start).
   :meth:`Gate.abort` writes ``abort``: the gate exits 1, LXC aborts and kills the init.
4. If the backend dies, its writer closes: the gate reads EOF, exits 1, LXC aborts. The
   ``delete`` action also writes ``abort`` (``cleanup.abort_gate``), which covers a gate that
   had not opened ``gate-start`` yet when the backend died.

The backend keeps ``gate-start`` open until the monitor has exited, so an ``abort`` written
before the gate opened the FIFO stays buffered and is read when it does.
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from runtime.lxc.cleanup import GATE_READY, GATE_START
from runtime.stdio import fd_ready

SCRIPT = Path(__file__).with_name("gate.sh")


def hook_command(state_dir: Path, *, hold: bool = False) -> str:
    """The ``lxc.hook.start-host`` value. LXC runs it through ``/bin/sh -c`` and appends
    ``<name> lxc start-host`` (measured), hence the quoting; ``sh script`` needs no exec bit.
    ``hold``: the gate keeps waiting when the creating process is gone (gate.sh --hold)."""
    command = f"/bin/sh {shlex.quote(str(SCRIPT))} {shlex.quote(str(state_dir))}"
    return command + " --hold" if hold else command


def release(state_dir: Path) -> bool:
    """Write "go" to a held gate from another process (``proxmox-lxcri start``). False when
    no gate is waiting (the FIFO is gone, or nobody reads it: ENXIO)."""
    try:
        fd = os.open(state_dir / GATE_START, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        os.write(fd, b"go\n")
        return True
    finally:
        os.close(fd)


class Gate:
    """The two FIFOs of one container, held open by the backend."""

    def __init__(self, state_dir: Path) -> None:
        self._ready_path = state_dir / GATE_READY
        self._start_path = state_dir / GATE_START
        for path in (self._ready_path, self._start_path):
            path.unlink(missing_ok=True)
            os.mkfifo(path, 0o600)
        self._start: int | None = os.open(self._start_path, os.O_RDWR | os.O_CLOEXEC)
        self._ready: int | None = os.open(
            self._ready_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._buf = b""

    async def pid(self) -> int:
        """Wait for the gate's line with ``LXC_PID`` (callers race it against the monitor's
        exit and a timeout)."""
        assert self._ready is not None
        while b"\n" not in self._buf:
            await fd_ready(self._ready)
            try:
                self._buf += os.read(self._ready, 64)
            except BlockingIOError:
                continue
        line = self._buf.split(b"\n", 1)[0]
        return int(line.decode().strip())

    def release(self) -> None:
        self._send(b"go\n")

    def abort(self) -> None:
        self._send(b"abort\n")

    def _send(self, line: bytes) -> None:
        if self._start is not None:
            os.write(self._start, line)  # a FIFO write of < PIPE_BUF bytes is atomic

    def close(self) -> None:
        """Close both FIFOs (after the monitor exited) and remove them. Idempotent."""
        for fd in (self._start, self._ready):
            if fd is not None:
                os.close(fd)
        self._start = self._ready = None
        for path in (self._ready_path, self._start_path):
            path.unlink(missing_ok=True)
