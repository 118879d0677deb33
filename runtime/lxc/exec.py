"""Exec processes: ``lxc-attach`` into a running container (DESIGN.md section 5.1).

``lxc-attach -P <lxcpath> -n <name> --clear-env`` enters all of the container's namespaces, its
cgroup and its LSM/seccomp settings, and passes the program's exit status through (measured:
``sh -c 'exit 3'`` → 3). The attached program is a direct child of ``lxc-attach`` (LXC clones
it with CLONE_PARENT; measured), whose host PID is what the Task API reports for the exec.

Two gaps of the ``lxc-attach`` tool, handled here:
- it has no option for the working directory: it chdirs to its *own* cwd's path inside the
  container and silently stays in ``/`` when that does not exist there (measured). A cwd other
  than ``/`` is therefore entered by the container's ``/bin/sh`` (``cd -- DIR && exec …``); an
  image without ``/bin/sh`` can only exec in ``/`` (a clear error says so).
- with ``--clear-env`` the program starts with only ``container=lxc``: the exec's env is passed
  with ``-v``, and its program is resolved in the container's rootfs with the exec's PATH.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import errdefs
from runtime.lxc.rootfs import look_path, resolve_in_rootfs
from runtime.reaper import Child, Reaper
from runtime.stdio import ProcessIO, TerminalIO, open_stdio
from runtime.types import ExecConfig, Stdio

_HOST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
#: How long to look for the attached program under lxc-attach before giving up on its PID.
_PID_TIMEOUT = 5.0
_CD_SCRIPT = 'cd -- "$1" || exit 126; shift; exec "$@"'


@dataclass(frozen=True)
class AttachContext:
    """What exec needs to know about its container."""

    reaper: Reaper
    lxc_attach: str
    lxcpath: Path
    name: str
    rootfs: Path
    #: An exec without stdio paths gets the caller's stdin, stdout and stderr (the OCI CLI's
    #: pass-through, like ``runc exec``) instead of /dev/null.
    inherit_stdio: bool = False
    #: lxc-checkpoint, for the container's process checkpoint (runtime.lxc.checkpoint).
    lxc_checkpoint: str = "lxc-checkpoint"


def attach_argv(ctx: AttachContext, process: dict[str, Any]) -> list[str]:
    """The ``lxc-attach`` command line for an OCI ``Process`` (pure but for the rootfs
    look-ups that resolve the program and check for ``/bin/sh``)."""
    args = process.get("args") or []
    env = [e for e in process.get("env") or [] if isinstance(e, str) and "=" in e]
    cwd = process.get("cwd") or "/"
    user = process.get("user") or {}
    program = look_path(ctx.rootfs, args[0], env, cwd)
    argv = [ctx.lxc_attach, "-q", "-P", str(ctx.lxcpath), "-n", ctx.name, "--clear-env",
            "-u", str(int(user.get("uid", 0))), "-g", str(int(user.get("gid", 0)))]
    for e in env:
        argv += ["-v", e]
    argv.append("--")
    if cwd.rstrip("/") in ("",):
        return [*argv, program, *args[1:]]
    if not resolve_in_rootfs(ctx.rootfs, "/bin/sh").exists():
        raise errdefs.InvalidArgument(
            f"cwd: {cwd}: an exec outside / needs /bin/sh in the image (lxc-attach has no "
            "working-directory option)")
    return [*argv, "/bin/sh", "-c", _CD_SCRIPT, "sh", cwd, program, *args[1:]]


async def start_exec(ctx: AttachContext, config: ExecConfig) -> LxcExec:
    if ctx.inherit_stdio and config.stdio == Stdio():
        io = ProcessIO(stdin=0, stdout=1, stderr=2)
        io.ctty = bool(config.process.get("terminal")) and os.isatty(0)
    else:
        io = open_stdio(config.stdio, config.process.get("consoleSize"))
    try:
        argv = attach_argv(ctx, config.process)
        child = ctx.reaper.spawn(argv, stdin=io.stdin, stdout=io.stdout, stderr=io.stderr,
                                 env=_HOST_ENV, cwd="/", new_session=True,
                                 controlling_tty=io.ctty,
                                 umask=(config.process.get("user") or {}).get("umask"))
    except BaseException:
        io.close()
        raise
    io.spawned()
    pid = await _attached_pid(child)
    return LxcExec(child, io, pid)


async def _attached_pid(child: Child) -> int:
    """The program's host PID: lxc-attach's child (it waits for it), or lxc-attach's own PID
    if the program already finished (its status still comes from lxc-attach)."""
    path = Path(f"/proc/{child.pid}/task/{child.pid}/children")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _PID_TIMEOUT
    delay = 0.0005
    while child.returncode is None and loop.time() < deadline:
        try:
            kids = path.read_text().split()
        except OSError:
            break
        for kid in kids:
            # lxc-attach's first child is its own helper, still in our PID namespace; the
            # program is the child that lives in the container's.
            if _in_other_pid_ns(int(kid)):
                return int(kid)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)
    return child.pid


def _in_other_pid_ns(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    except OSError:
        return False


class LxcExec:
    """A started exec (implements ``runtime.backend.ProcessHandle``)."""

    def __init__(self, child: Child, io: ProcessIO, pid: int) -> None:
        self._child = child
        self._io = io
        self._pid = pid
        self._pidfd: int | None = None
        with contextlib.suppress(OSError):
            self._pidfd = os.pidfd_open(pid)

    @property
    def pid(self) -> int:
        return self._pid

    async def wait(self) -> int:
        rc = await self._child.wait()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        return rc

    def kill(self, sig: int) -> None:
        if self._child.returncode is not None:
            raise errdefs.NotFound("exec: process already finished")
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                self._child.send_signal(sig)
        except ProcessLookupError:
            raise errdefs.NotFound("exec: process already finished") from None

    def resize(self, width: int, height: int) -> None:
        if isinstance(self._io, TerminalIO):
            self._io.resize(width, height)

    def close_stdin(self) -> None:
        self._io.close_stdin()

    async def close(self) -> None:
        await self._io.aclose()
