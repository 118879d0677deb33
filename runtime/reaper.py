"""One reaper that owns every ``waitpid`` of the daemon.

The daemon is a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``) so orphaned descendants of
its containers come back to it and must be reaped. A global ``waitpid(-1)`` loop races with any
other waiter for the same children (shim-protocol.md section 7, "Reaper steals exit statuses";
firecracker-containerd PR #286), so *all* children are spawned through :class:`Reaper` and their
exit statuses are dispatched from one place. Never call ``Popen.wait``/``poll`` on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
_UNCLAIMED_MAX = 256


def exit_code(wait_status: int) -> int:
    """A ``waitpid`` status as a shell-style code: the exit code, or 128 + signal number."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def set_child_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes


class Child:
    """A spawned child. ``await child.wait()`` gives its exit code (128 + signal if killed)."""

    def __init__(self, popen: subprocess.Popen[bytes], fut: asyncio.Future[int]) -> None:
        self._popen = popen
        self._fut = fut
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        return self._fut.result() if self._fut.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._fut)

    def send_signal(self, sig: int) -> None:
        """Signal the child unless it has been reaped (its pid may be reused after that)."""
        if not self._fut.done():
            os.kill(self.pid, sig)


class Reaper:
    """Spawns children and dispatches their exit statuses, reaping orphans as well."""

    def __init__(self, child_oom_score_adj: int | None = None) -> None:
        #: Given to every child (and so to the containers it starts): the daemon protects
        #: itself with a lower OOM score than its containers (see shim.daemon).
        self.child_oom_score_adj = child_oom_score_adj
        self._waiters: dict[int, tuple[subprocess.Popen[bytes], asyncio.Future[int]]] = {}
        self._unclaimed: OrderedDict[int, int] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop, *, subreaper: bool = True) -> None:
        self._loop = loop
        if subreaper:
            set_child_subreaper()
        loop.add_signal_handler(signal.SIGCHLD, self.reap)

    def uninstall(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        new_session: bool = False,
        pass_fds: Sequence[int] = (),
        controlling_tty: bool = False,
        umask: int | None = None,
    ) -> Child:
        """Start ``argv`` (no shell). ``None`` stdio means ``/dev/null``.

        ``controlling_tty`` (with ``new_session``) makes the child's stdin, a pty slave, its
        controlling terminal: LXC proxies a container's console only for a caller that has one,
        and the kernel then sends it SIGWINCH on every resize (measured with lxc-execute).
        ``umask`` is set in the child before exec; LXC has no key for it and the container's
        program inherits it through lxc-execute / lxc-attach.
        """
        loop = self._loop or asyncio.get_running_loop()
        devnull = subprocess.DEVNULL
        with self._child_oom_score() as inherited:
            popen = subprocess.Popen(
                list(argv),
                stdin=devnull if stdin is None else stdin,
                stdout=devnull if stdout is None else stdout,
                stderr=devnull if stderr is None else stderr,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=new_session or controlling_tty,
                pass_fds=tuple(pass_fds),
                close_fds=True,
                umask=-1 if umask is None else umask,
                # The only Python run between fork and exec; safe here because the daemon runs
                # no threads when it spawns (asyncio, one thread). Without one, subprocess
                # uses vfork: ~0.1 ms instead of ~5 ms to fork this daemon (measured).
                preexec_fn=_preexec(controlling_tty,
                                    None if inherited else self.child_oom_score_adj),
            )
        fut: asyncio.Future[int] = loop.create_future()
        # The SIGCHLD handler runs as a loop callback, never between spawn and this line, so
        # the exit cannot be lost; an already-reaped status (pid in _unclaimed) is impossible
        # for a pid we have not seen yet unless it was reused, which the pop below tolerates.
        self._unclaimed.pop(popen.pid, None)
        self._waiters[popen.pid] = (popen, fut)
        return Child(popen, fut)

    @contextlib.contextmanager
    def _child_oom_score(self) -> Iterator[bool]:
        """The daemon's own OOM score set to its children's while one is spawned, so that the
        child inherits it (without a preexec_fn, which would make subprocess fork instead of
        vfork), then back. True when the child inherits the score this way; False (and the
        preexec_fn writes it in the child) when there is none or it cannot be set."""
        adj = self.child_oom_score_adj
        if adj is None:
            yield False
            return
        try:
            with open("/proc/self/oom_score_adj", "r+") as f:
                own = f.read().strip()
                f.seek(0)
                f.write(str(adj))
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            try:
                with open("/proc/self/oom_score_adj", "w") as f:
                    f.write(own)
            except OSError as exc:
                log.warning("cannot restore the shim's OOM score %s: %s", own, exc)

    def reap(self) -> None:
        """Collect every exited child (SIGCHLD handler; safe to call at any time)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = exit_code(status)
            entry = self._waiters.pop(pid, None)
            if entry is None:
                log.debug("reaped orphan pid %d (status %d)", pid, code)
                self._unclaimed[pid] = code
                while len(self._unclaimed) > _UNCLAIMED_MAX:
                    self._unclaimed.popitem(last=False)
                continue
            popen, fut = entry
            popen.returncode = code  # so Popen never waits on it itself
            if not fut.done():
                fut.set_result(code)

    def orphan_status(self, pid: int) -> int | None:
        """The exit status of ``pid`` if this reaper reaped it as an orphan (a descendant that
        came back to the subreaper), shell-style, once; None if it did not (or not yet, or
        too long ago: the last 256 are kept). Reaps what is pending first."""
        self.reap()
        return self._unclaimed.pop(pid, None)

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = 30.0,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> Completed:
        """Run a helper command to completion, capturing stdout and stderr.

        On timeout the command is killed and :class:`TimeoutError` raised.
        """
        loop = asyncio.get_running_loop()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        in_r, in_w = os.pipe() if input is not None else (None, None)
        try:
            child = self.spawn(argv, stdin=in_r, stdout=out_w, stderr=err_w, env=env, cwd=cwd)
        except BaseException:
            for fd in (out_r, out_w, err_r, err_w, in_r, in_w):
                if fd is not None:
                    os.close(fd)
            raise
        os.close(out_w)
        os.close(err_w)
        if in_r is not None:
            os.close(in_r)
        try:
            async with asyncio.timeout(timeout):
                feed = (loop.run_in_executor(None, _write_all, in_w, input or b"")
                        if in_w is not None else None)
                out, err = await asyncio.gather(_read_all(out_r), _read_all(err_r))
                if feed is not None:
                    await feed
                rc = await child.wait()
        except TimeoutError:
            child.send_signal(signal.SIGKILL)
            await child.wait()
            raise
        finally:
            os.close(out_r)
            os.close(err_r)
        return Completed(tuple(argv), rc, out, err)


def _preexec(ctty: bool, oom_score_adj: int | None) -> Callable[[], None] | None:
    if not ctty and oom_score_adj is None:
        return None  # without a preexec_fn, subprocess may use vfork: faster

    def run() -> None:
        if oom_score_adj is not None:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(oom_score_adj))
        if ctty:
            import fcntl
            import termios

            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    return run


def _write_all(fd: int, data: bytes) -> None:
    try:
        with os.fdopen(fd, "wb", closefd=True) as f:
            f.write(data)
    except BrokenPipeError:
        pass


async def _read_all(fd: int) -> bytes:
    """Read a pipe to EOF without blocking the loop."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    done: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not data:
                loop.remove_reader(fd)
                if not done.done():
                    done.set_result(None)
                return
            chunks.append(data)

    loop.add_reader(fd, on_readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)
