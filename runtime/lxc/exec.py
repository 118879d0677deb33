"""Exec processes: ``lxc-attach`` into a running container (DESIGN.md section 5.1).

``lxc-attach -P <lxcpath> -n <name> --clear-env`` enters all of the container's namespaces, its
cgroup and its LSM label, and passes the program's exit status through (measured:
``sh -c 'exit 3'`` → 3). What it runs is the container's own init (:mod:`runtime.lxc.owninit`)
with a directory of the exec's files: the init applies the exec's user, supplementary groups,
rlimits, the five capability sets, no_new_privs and the container's seccomp filter, enters
the working directory, and execve()s the program, as ``runc exec`` does. ``lxc-attach``
itself has no option for supplementary groups or a working directory (it silently stays in
``/`` for a path that does not exist on the host, measured), and the container's LXC
configuration no longer carries capabilities or seccomp (the init applies them).
The attached program is a direct child of ``lxc-attach`` (LXC clones it with CLONE_PARENT;
measured), whose host PID is what the Task API reports for the exec. With ``--clear-env`` the
program starts with only ``container=lxc``: the exec's env is passed with ``-v``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import errdefs
from runtime.lxc import owninit, security
from runtime.lxc.rootfs import look_path, resolve_in_rootfs
from runtime.reaper import Child, Reaper
from runtime.stdio import ProcessIO, TerminalIO, open_stdio
from runtime.types import ExecConfig, Stdio

_HOST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
#: How long to look for the attached program under lxc-attach before giving up on its PID.
_PID_TIMEOUT = 5.0


@dataclass(frozen=True)
class AttachContext:
    """What exec needs to know about its container."""

    reaper: Reaper
    lxc_attach: str
    lxcpath: Path
    name: str
    rootfs: Path
    #: The container's init directory (runtime.lxc.owninit); None for a container without the
    #: LXC backend's init (a Proxmox CT): plain lxc-attach then (plain_attach_argv).
    init_dir: Path | None = None
    #: An exec without stdio paths gets the caller's stdin, stdout and stderr (the OCI CLI's
    #: pass-through, like ``runc exec``) instead of /dev/null.
    inherit_stdio: bool = False
    #: lxc-checkpoint, for the container's process checkpoint (runtime.lxc.checkpoint).
    lxc_checkpoint: str = "lxc-checkpoint"


def attach_argv(ctx: AttachContext, process: dict[str, Any], files: str) -> list[str]:
    """The ``lxc-attach`` command line for an OCI ``Process`` whose init files are at
    ``files`` inside the container (:func:`runtime.lxc.owninit.prepare_exec`)."""
    env = [e for e in process.get("env") or [] if isinstance(e, str) and "=" in e]
    # As root with every capability (-e CAP: lxc-attach would otherwise cut the bounding set
    # to the container's first process's, after which its execve of the init leaves no
    # capability to switch users with, measured): the init then applies the exec's user and
    # capabilities itself, as runc's setns init does.
    argv = [ctx.lxc_attach, "-q", "-P", str(ctx.lxcpath), "-n", ctx.name, "--clear-env",
            "-u", "0", "-g", "0", "--elevated-privileges=CAP"]
    for e in env:
        argv += ["-v", e]
    return [*argv, "--", owninit.INIT_PATH, files]


_CD_SCRIPT = 'cd -- "$1" || exit 126; shift; exec "$@"'


def plain_attach_argv(ctx: AttachContext, process: dict[str, Any]) -> list[str]:
    """``lxc-attach`` running the program itself, for a container without the project's
    exec-capable init (the Proxmox backend's CTs): user and gid by lxc-attach, a cwd other
    than / through the image's /bin/sh (lxc-attach has no working-directory option)."""
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


async def start_exec(ctx: AttachContext, config: ExecConfig, *,
                     shared_pid_ns: bool = False) -> LxcExec:
    """``shared_pid_ns``: the container runs in the runtime's PID namespace (hostPID)."""
    if ctx.init_dir is None:
        return await _start_plain_exec(ctx, config, shared_pid_ns)
    process = config.process
    args = process.get("args") or []
    env = [e for e in process.get("env") or [] if isinstance(e, str) and "=" in e]
    # A clear error now rather than status 127 from the init.
    look_path(ctx.rootfs, args[0], env, process.get("cwd") or "/")
    notes: list[str] = []
    directives = security.process_directives(process, notes)
    # The container's seccomp filter confines its execs too (runc), with its flags.
    seccomp = owninit.container_directive(ctx.init_dir, "seccomp")
    if seccomp is not None:
        directives += seccomp + "\n"
    if process.get("capabilities") is None:
        # runc gives such an exec the container's capabilities; lxc-attach starts the init
        # with all of them (--elevated-privileges=CAP), so they must be said.
        caps = owninit.container_directive(ctx.init_dir, "caps")
        if caps is not None:
            directives += caps + "\n"
    files, inside = owninit.prepare_exec(ctx.init_dir, args, directives)
    io = None
    try:
        if ctx.inherit_stdio and config.stdio == Stdio():
            io = ProcessIO(stdin=0, stdout=1, stderr=2)
            io.ctty = bool(process.get("terminal")) and os.isatty(0)
        else:
            io = open_stdio(config.stdio, process.get("consoleSize"))
        child = ctx.reaper.spawn(attach_argv(ctx, process, inside), stdin=io.stdin,
                                 stdout=io.stdout, stderr=io.stderr, env=_HOST_ENV, cwd="/",
                                 new_session=True, controlling_tty=io.ctty,
                                 umask=(process.get("user") or {}).get("umask"))
    except BaseException:
        if io is not None:
            io.close()
        shutil.rmtree(files, ignore_errors=True)
        raise
    io.spawned()
    pid = await _attached_pid(child, shared_pid_ns)
    return LxcExec(child, io, pid, files)


async def _start_plain_exec(ctx: AttachContext, config: ExecConfig,
                            shared_pid_ns: bool) -> LxcExec:
    if ctx.inherit_stdio and config.stdio == Stdio():
        io = ProcessIO(stdin=0, stdout=1, stderr=2)
        io.ctty = bool(config.process.get("terminal")) and os.isatty(0)
    else:
        io = open_stdio(config.stdio, config.process.get("consoleSize"))
    try:
        child = ctx.reaper.spawn(plain_attach_argv(ctx, config.process), stdin=io.stdin,
                                 stdout=io.stdout, stderr=io.stderr, env=_HOST_ENV, cwd="/",
                                 new_session=True, controlling_tty=io.ctty,
                                 umask=(config.process.get("user") or {}).get("umask"))
    except BaseException:
        io.close()
        raise
    io.spawned()
    pid = await _attached_pid(child, shared_pid_ns)
    return LxcExec(child, io, pid)


async def _attached_pid(child: Child, shared_pid_ns: bool = False) -> int:
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
            if _is_program(int(kid), shared_pid_ns):
                return int(kid)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)
    return child.pid


def _is_program(pid: int, shared_pid_ns: bool) -> bool:
    """lxc-attach's first children are its own helpers (LXC re-executed from a memfd, comm
    "memfd:lxc-attac"), which stay in our PID namespace; the program is the child in the
    container's. When the container shares our PID namespace (hostPID), it is the child that
    has exec'd (the init, then the program), measured."""
    if _pid_ns(pid) not in ("", _pid_ns(os.getpid())):
        return True
    if not shared_pid_ns:
        return False
    comm = _comm(pid)
    return bool(comm) and not comm.startswith("memfd:") and comm != "lxc-attach"


def _pid_ns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def in_our_pid_ns(pid: int) -> bool:
    """Whether ``pid`` (a container's process) shares the runtime's PID namespace."""
    return _pid_ns(pid) == _pid_ns(os.getpid())


class LxcExec:
    """A started exec (implements ``runtime.backend.ProcessHandle``)."""

    def __init__(self, child: Child, io: ProcessIO, pid: int, files: Path | None = None) -> None:
        self._child = child
        self._io = io
        self._pid = pid
        #: The exec's init files (removed once it has ended).
        self._files = files
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
        self._remove_files()
        return rc

    def _remove_files(self) -> None:
        if self._files is not None:
            shutil.rmtree(self._files, ignore_errors=True)
            self._files = None

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
        self._remove_files()
