"""The backend's side of the gate: the container's init reports the outcome of its set-up and
waits there for Start (OCI create / start, as runc's init waits on its exec FIFO).

Protocol, over two FIFOs in the init's directory (``/dev/.lxcri`` inside the container, so
the init reaches them):

1. Before the monitor runs, the backend makes ``gate-ready`` and ``gate-start`` and opens
   both ``O_RDWR`` (never blocks, fifo(7)); it holds the only writer of ``gate-start``.
2. LXC's ``lxc.hook.start-host`` (``gate.sh``) writes ``$LXC_PID`` + newline into
   ``gate-ready``: the host PID of the container's first process, which the init cannot know.
3. The init (``runtime/lxc/init/lxcri-init.c``) runs every set-up step runc's init runs before
   its exec FIFO wait (groups, rlimits, capabilities, user, cwd, the executable's lookup,
   no_new_privs, the seccomp filter), then writes one line into ``gate-ready``: ``ready``, or
   ``error KIND MESSAGE`` and exits. :meth:`Gate.result` turns the line into the create's
   outcome (KIND is one of :data:`KINDS`, the errdefs class). Create returns only then.
   With create-time hooks (prestart, createRuntime, createContainer), the init first waits
   for ``setup`` (:meth:`Gate.setup`): create returns after the PID, the supervisor runs the
   hooks and then finishes the create (``finish_create``), as runc runs them before its
   init's last steps (a hook may put the program in place).
4. :meth:`Gate.release` writes ``go``: the init execve()s the program (OCI start).
   :meth:`Gate.abort` writes ``abort``: the init exits (status 137).
5. If the backend dies, its writer closes: the init reads EOF and exits. The ``delete`` action
   also writes ``abort`` (``cleanup.abort_gate``). The OCI CLI's init holds a writer of
   ``gate-start`` itself ("gate hold" in its process file): its creating process exits after
   create, and a later ``start`` or ``delete`` writes the line (:func:`release`).
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from runtime import errdefs
from runtime.lxc.cleanup import GATE_READY, GATE_START
from runtime.stdio import fd_ready

SCRIPT = Path(__file__).with_name("gate.sh")

#: The init's error kinds and the errdefs class each becomes.
KINDS: dict[str, type[errdefs.ErrdefsError]] = {
    "notfound": errdefs.NotFound,
    "invalid": errdefs.InvalidArgument,
    "precondition": errdefs.FailedPrecondition,
    "internal": errdefs.Internal,
}
#: The longest line the init writes (one atomic FIFO write, PIPE_BUF).
_LINE_MAX = 4096


def hook_command(init_dir: Path) -> str:
    """The ``lxc.hook.start-host`` value. LXC runs it through ``/bin/sh -c`` and appends
    ``<name> lxc start-host`` (measured), hence the quoting; ``sh script`` needs no exec bit."""
    return f"/bin/sh {shlex.quote(str(SCRIPT))} {shlex.quote(str(init_dir))}"


def directive(*, hold: bool, hooks: bool = False) -> str:
    """The init's ``process`` lines that make it report and wait at the gate; ``hooks``: it
    first waits for ``setup`` (:meth:`Gate.setup`), sent once the create-time hooks ran."""
    return ("gate hold\n" if hold else "gate\n") + ("hooks\n" if hooks else "")


def release(state_dir: Path) -> bool:
    """Write "go" to a held gate from another process (``proxmox-lxcri start``). False when
    no init is waiting (the FIFO is gone, or nobody reads it: ENXIO)."""
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


def outcome(line: str) -> None:
    """Raise the create's error for the init's line; nothing for ``ready``. The message is
    the init's (it names the field or the program, with runc's wording where runc has one)."""
    if line == "ready":
        return
    parts = line.split(" ", 2)
    if len(parts) == 3 and parts[0] == "error" and parts[1] in KINDS:
        raise KINDS[parts[1]](parts[2])
    raise errdefs.Internal(f"the container init reported {line[:200]!r}")


class Gate:
    """The two FIFOs of one container, held open by the backend."""

    def __init__(self, state_dir: Path, owner: tuple[int, int] | None = None) -> None:
        """``owner``: the host uid and gid of the container's root with a user namespace;
        the init must open the FIFOs as that user (the files are 0600)."""
        self._ready_path = state_dir / GATE_READY
        self._start_path = state_dir / GATE_START
        for path in (self._ready_path, self._start_path):
            path.unlink(missing_ok=True)
            os.mkfifo(path, 0o600)
            if owner is not None:
                os.chown(path, *owner)
        # Non-blocking: the FIFOs are visible inside the container (/dev/.lxcri), whose root
        # could fill gate-start; a write of ours must never block the daemon on it.
        self._start: int | None = os.open(
            self._start_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._ready: int | None = os.open(
            self._ready_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._buf = b""

    async def pid(self) -> int:
        """Wait for the hook's line with ``LXC_PID`` (callers race it against the monitor's
        exit and a timeout)."""
        return int((await self._line()).strip())

    async def result(self) -> None:
        """Wait for the init's line after its set-up: returns on ``ready``, raises its error
        otherwise (callers race it against the monitor's exit and a timeout)."""
        outcome(await self._line())

    def pending(self) -> str | None:
        """A whole line already written but not read yet (the init's error, when its exit
        was seen first), without waiting."""
        self._fill()
        if b"\n" not in self._buf:
            return None
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace")

    async def _line(self) -> str:
        assert self._ready is not None
        while b"\n" not in self._buf:
            await fd_ready(self._ready)
            self._fill()
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace")

    def _fill(self) -> None:
        if self._ready is None:
            return
        try:
            self._buf += os.read(self._ready, _LINE_MAX)
        except BlockingIOError:
            pass
        if len(self._buf) > 2 * _LINE_MAX and b"\n" not in self._buf:
            self._buf = self._buf[:_LINE_MAX] + b"\n"  # never an endless line in memory

    def setup(self) -> None:
        """Let an init that waits for the create-time hooks run its set-up."""
        self._send(b"setup\n")

    def release(self) -> None:
        self._send(b"go\n")

    def abort(self) -> None:
        self._send(b"abort\n")

    def _send(self, line: bytes) -> None:
        if self._start is not None:
            try:
                os.write(self._start, line)  # a FIFO write of < PIPE_BUF bytes is atomic
            except BlockingIOError:
                pass  # full, not of our making (see __init__): only a SIGKILL ends the init

    def close(self) -> None:
        """Close both FIFOs (after the monitor exited) and remove them; what the init wrote
        last stays readable (:meth:`pending`). Idempotent."""
        self._fill()
        for fd in (self._start, self._ready):
            if fd is not None:
                os.close(fd)
        self._start = self._ready = None
        for path in (self._ready_path, self._start_path):
            path.unlink(missing_ok=True)
