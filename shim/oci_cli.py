"""The OCI runtime command line of ``proxmox-lxcri`` (runc-compatible where runc set the
convention): create, start, state, kill, delete, run, ps, exec, pause, resume, spec, features.

Containers live in the shim's state root and layout (DESIGN.md section 9):
``<root>/containers/<namespace>/<id>/`` holds ``state.json`` (what ``list`` shows),
``config.json`` (the spec, for the hooks of later commands) and the LXC backend's files;
the LXC containers are under ``<root>/lxc``. The CLI's namespace is ``cli`` unless
``--namespace`` says otherwise.

How ``create`` leaves a container behind (docs/cli.md has the whole story):

- ``lxc-execute`` (the monitor) is spawned as a child of ``create``, in its own session, with
  the start-host gate in ``--hold`` mode; ``create`` exits once the gate reported the init's
  PID, so the monitor re-parents to the caller's subreaper (or PID 1), as runc's init does.
- ``--pid-file`` gets the **monitor's** PID: it is the subreaper's child, it exits with the
  container program's status (environment.md section 2) and forwards signals to the init
  (measured: SIGTERM to the monitor reaches the program). ``state`` reports the container's
  init PID, the one to signal or ``nsenter``.
- without a terminal the container inherits ``create``'s stdin, stdout and stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime import errdefs, hooks, oci
from runtime.lxc import cgroup, cleanup, gate, resources, state
from runtime.lxc.backend import LxcBackend, lxc_name
from runtime.reaper import Reaper
from runtime.store import Store, state_root
from runtime.types import CreateConfig

log = logging.getLogger("proxmox-lxcri")

OWNER = "proxmox-lxcri"
DEFAULT_NAMESPACE = "cli"
#: The commands this module adds (``list`` is the operator CLI's, over the same state).
COMMANDS = ("create", "start", "state", "kill", "delete", "run", "ps", "exec", "pause",
            "resume", "spec", "features")


# --- plumbing --------------------------------------------------------------------------------


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"level": record.levelname.lower(), "msg": record.getMessage(),
                           "time": _now()})


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return (f'time="{_now()}" level={record.levelname.lower()} '
                f"msg={json.dumps(record.getMessage())}")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _setup_logging(args: argparse.Namespace, stderr: Any) -> None:
    """--log FILE gets every record, stderr the errors, both in --log-format (runc's)."""
    fmt: logging.Formatter = _Json() if args.log_format == "json" else _Text()
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.DEBUG if args.debug else logging.INFO)
    err = logging.StreamHandler(stderr)
    err.setLevel(logging.ERROR)
    err.setFormatter(fmt)
    root.addHandler(err)
    if args.log:
        f = logging.FileHandler(args.log)
        f.setFormatter(fmt)
        root.addHandler(f)


def _wrap(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Errors become one OCI-style message (``container x: not found``) and exit status 1."""
    def run(args: argparse.Namespace) -> int:
        stderr = os.fdopen(os.dup(2), "w", buffering=1)  # create may hand fd 2 to a pty
        _setup_logging(args, stderr)
        try:
            return func(args)
        except errdefs.ErrdefsError as exc:
            log.error("%s", exc)
            return 1
        except OSError as exc:
            log.error("%s", exc)
            return 1
        except Exception as exc:  # a bug: still one OCI-style line, with the traceback logged
            log.debug("unexpected error", exc_info=True)
            log.error("internal error: %s: %s", type(exc).__name__, exc)
            return 1
    return run


class Ctx:
    """One command's view of the state root."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.root = Path(args.root) if args.root else state_root()
        self.namespace: str = args.namespace
        self.store = Store(self.root)
        self.lxcpath = self.root / "lxc"

    def dir(self, id: str) -> Path:
        lxc_name(self.namespace, id)  # validates the id (containerd's rule)
        return self.store.container_dir(self.namespace, id)

    def record(self, id: str) -> dict[str, Any]:
        rec = self.store.load(self.namespace, id)
        if rec is None:
            raise errdefs.NotFound(f"container {id} does not exist")
        return rec

    def spec(self, id: str) -> dict[str, Any]:
        data = json.loads((self.dir(id) / "config.json").read_text())
        assert isinstance(data, dict)
        return data


def status_of(ctx: Ctx, id: str) -> tuple[str, state.PersistedState | None]:
    """created, running, paused or stopped, from the processes themselves."""
    rec = ctx.record(id)
    st = state.load(ctx.dir(id))
    if st is None or not st.pid or not state.is_alive(st.pid, st.pid_start_time):
        return "stopped", st
    if rec.get("status") == "created" and (ctx.dir(id) / cleanup.GATE_START).exists():
        return "created", st
    return ("paused" if _frozen(st) else "running"), st


def _frozen(st: state.PersistedState) -> bool:
    v1 = Path(f"/sys/fs/cgroup/freezer/lxc.payload.{st.name}/freezer.state")
    with contextlib.suppress(OSError):
        return v1.read_text().strip() == "FROZEN"
    directory = cgroup.cgroup_dir(st.pid, st.name)
    with contextlib.suppress(OSError):
        return "frozen 1" in (directory / "cgroup.events").read_text() if directory else False
    return False


def oci_state(ctx: Ctx, id: str) -> dict[str, Any]:
    """The OCI state (runtime.md "State")."""
    rec = ctx.record(id)
    status, st = status_of(ctx, id)
    return {"ociVersion": rec.get("ociVersion", "1.0.2"), "id": id, "status": status,
            "pid": st.pid if st is not None and status != "stopped" else 0,
            "bundle": rec.get("bundle", ""), "annotations": rec.get("annotations", {}),
            "created": rec.get("created", "")}


# --- create / start / run ----------------------------------------------------------------------


def cmd_create(args: argparse.Namespace) -> int:
    ctx = Ctx(args)
    bundle = Path(args.bundle).resolve()
    spec = oci.load_spec(bundle)
    if spec["process"].get("terminal") and not args.console_socket:
        raise errdefs.InvalidArgument("process.terminal: a terminal needs --console-socket")
    monitor, pid = asyncio.run(_create(ctx, args.id, bundle, spec, args.console_socket,
                                       hold=True))
    if args.pid_file:
        _write_pid_file(Path(args.pid_file), monitor)
    log.info("created %s: init pid %d, monitor pid %d", args.id, pid, monitor)
    return 0


async def _create(ctx: Ctx, id: str, bundle: Path, spec: dict[str, Any],
                  console_socket: str | None, *, hold: bool) -> tuple[int, int]:
    """Create through the LXC backend; returns (monitor pid, init pid)."""
    directory = ctx.dir(id)
    if ctx.store.load(ctx.namespace, id) is not None:
        raise errdefs.AlreadyExists(f"container {id}")
    reaper = Reaper()
    reaper.install(asyncio.get_running_loop(), subreaper=False)
    master = _attach_console(console_socket) if console_socket else None
    backend = LxcBackend(reaper, ctx.lxcpath, hold_gate=hold, inherit_stdio=True)
    config = CreateConfig(id=id, namespace=ctx.namespace, bundle=bundle, spec=spec,
                          state_dir=directory)
    try:
        handle = await backend.create(config)
    except BaseException:
        ctx.store.remove(ctx.namespace, id)
        raise
    finally:
        if master is not None:
            os.close(master)
    (directory / "config.json").write_text(json.dumps(spec))
    st = state.load(directory)
    ctx.store.save(ctx.namespace, id, {
        "owner": OWNER, "status": "created", "pid": handle.pid, "bundle": str(bundle),
        "monitor_pid": st.monitor_pid if st else 0, "created": _now(),
        "ociVersion": spec.get("ociVersion"), "annotations": oci.spec_annotations(spec)})
    return (st.monitor_pid if st else 0), handle.pid


def _attach_console(path: str) -> int:
    """A pty whose slave becomes the container's stdio (fds 0-2 of this process, which the
    backend passes on), its master sent over ``path`` with SCM_RIGHTS as runc does (the
    message's data is the pty's name). Returns the master (closed after create)."""
    master, slave = os.openpty()
    name = os.ttyname(slave)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        socket.send_fds(sock, [name.encode()], [master])
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)
    return master


def _write_pid_file(path: Path, pid: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(str(pid))
    os.replace(tmp, path)


def cmd_start(args: argparse.Namespace) -> int:
    ctx = Ctx(args)
    status, st = status_of(ctx, args.id)
    if status != "created" or st is None:
        raise errdefs.FailedPrecondition(f"container {args.id} is {status}, not created")
    asyncio.run(_start(ctx, args.id, st))
    return 0


async def _start(ctx: Ctx, id: str, st: state.PersistedState) -> None:
    reaper = Reaper()
    reaper.install(asyncio.get_running_loop(), subreaper=False)
    rec = ctx.record(id)
    points = hooks.HookPoints(reaper, ctx.spec(id), id, rec.get("bundle", ""))
    if points:
        try:
            await points.start_container(st.pid)
        except errdefs.ErrdefsError:
            _signal(st, signal.SIGKILL)
            cleanup.abort_gate(ctx.dir(id))
            raise
    if not gate.release(ctx.dir(id)):
        raise errdefs.FailedPrecondition(f"container {id}: its start gate is gone")
    ctx.store.save(ctx.namespace, id, {**rec, "status": "running"})
    for name in (cleanup.GATE_START, cleanup.GATE_READY):
        (ctx.dir(id) / name).unlink(missing_ok=True)
    if points:
        await points.poststart(st.pid)


def cmd_run(args: argparse.Namespace) -> int:
    """create + start + wait + delete in this process (runc run without --detach); exits with
    the container's status."""
    ctx = Ctx(args)
    bundle = Path(args.bundle).resolve()
    spec = oci.load_spec(bundle)
    return asyncio.run(_run(ctx, args.id, bundle, spec, args.pid_file))


async def _run(ctx: Ctx, id: str, bundle: Path, spec: dict[str, Any],
               pid_file: str | None) -> int:
    if ctx.store.load(ctx.namespace, id) is not None:
        raise errdefs.AlreadyExists(f"container {id}")
    reaper = Reaper()
    reaper.install(asyncio.get_running_loop(), subreaper=False)
    backend = LxcBackend(reaper, ctx.lxcpath, inherit_stdio=True)
    config = CreateConfig(id=id, namespace=ctx.namespace, bundle=bundle, spec=spec,
                          state_dir=ctx.dir(id))
    try:
        handle = await backend.create(config)
    except BaseException:
        ctx.store.remove(ctx.namespace, id)
        raise
    try:
        ctx.store.save(ctx.namespace, id, {"owner": OWNER, "status": "running",
                                           "pid": handle.pid, "bundle": str(bundle),
                                           "created": _now()})
        if pid_file:
            _write_pid_file(Path(pid_file), handle.pid)
        await handle.start()
        return await handle.wait()
    finally:
        await handle.delete()
        ctx.store.remove(ctx.namespace, id)


# --- state / kill / delete / ps ------------------------------------------------------------


def cmd_state(args: argparse.Namespace) -> int:
    json.dump(oci_state(Ctx(args), args.id), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def parse_signal(text: str) -> int:
    """``9``, ``KILL`` or ``SIGKILL`` (runc accepts the three)."""
    if text.isdigit():
        value = int(text)
        if 0 < value < signal.NSIG:
            return value
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        with contextlib.suppress(AttributeError):
            return int(getattr(signal.Signals, name))
    raise errdefs.InvalidArgument(f"signal: {text!r} is not a signal")


def _signal(st: state.PersistedState, sig: int) -> None:
    """Signal the init through a pidfd, after checking it is still the recorded process."""
    fd = os.pidfd_open(st.pid)
    try:
        if not state.is_alive(st.pid, st.pid_start_time):
            raise ProcessLookupError
        signal.pidfd_send_signal(fd, sig)
    finally:
        os.close(fd)


def cmd_kill(args: argparse.Namespace) -> int:
    ctx = Ctx(args)
    sig = parse_signal(args.signal)
    status, st = status_of(ctx, args.id)
    if status == "stopped" or st is None:
        raise errdefs.NotFound(f"container {args.id}: process already finished")
    others = []
    if args.all:
        directory = cgroup.cgroup_dir(st.pid, st.name)
        others = [p for p in cgroup.procs(directory) if p != st.pid] if directory else []
    try:
        _signal(st, sig)
    except ProcessLookupError:
        raise errdefs.NotFound(f"container {args.id}: process already finished") from None
    if status == "created" and sig not in (signal.SIGCONT, signal.SIGCHLD, signal.SIGWINCH,
                                           signal.SIGURG, signal.SIGSTOP, signal.SIGTSTP):
        # A held init ignores default-action signals (PID-namespace init): abort the gate,
        # LXC then kills it, as the shim does for a created container.
        cleanup.abort_gate(ctx.dir(args.id))
    for pid in others:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    ctx = Ctx(args)
    try:
        rec = ctx.record(args.id)
    except errdefs.NotFound:
        if args.force:
            return 0  # runc: delete --force of a missing container succeeds
        raise
    if rec.get("owner") != OWNER and not args.force:
        raise errdefs.FailedPrecondition(f"container {args.id} belongs to a shim; use --force")
    status, st = status_of(ctx, args.id)
    if status in ("running", "paused") and not args.force:
        raise errdefs.FailedPrecondition(
            f"cannot delete container {args.id} that is {status}: stop it or use --force")
    if status == "paused" and st is not None:
        _lxc_tool("lxc-unfreeze", ctx, st)  # a frozen process cannot die of SIGKILL
    directory = ctx.dir(args.id)
    spec = ctx.spec(args.id) if (directory / "config.json").exists() else {}
    cleanup.cleanup(directory, Path(rec.get("bundle", "/")))
    if spec.get("hooks"):
        asyncio.run(_poststop(args.id, spec, rec.get("bundle", "")))
    ctx.store.remove(ctx.namespace, args.id)
    return 0


async def _poststop(id: str, spec: dict[str, Any], bundle: str) -> None:
    reaper = Reaper()
    reaper.install(asyncio.get_running_loop(), subreaper=False)
    await hooks.HookPoints(reaper, spec, id, bundle).poststop()


def cmd_ps(args: argparse.Namespace) -> int:
    ctx = Ctx(args)
    status, st = status_of(ctx, args.id)
    pids: list[int] = []
    if st is not None and status != "stopped":
        directory = cgroup.cgroup_dir(st.pid, st.name)
        pids = cgroup.procs(directory) if directory else [st.pid]
    if args.format == "json":
        print(json.dumps(pids))
        return 0
    print("PID     CMD")
    for pid in pids:
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            print(f"{pid:<7} {cmd.strip()}")
    return 0


# --- exec / pause / resume -------------------------------------------------------------------


def _lxc_tool(tool: str, ctx: Ctx, st: state.PersistedState, *extra: str) -> int:
    path = shutil.which(tool)
    if path is None:
        raise errdefs.Unavailable(f"{tool}: not found in PATH")
    # The caller's stdio passes through (exec's contract); the status is the tool's, which
    # for lxc-attach is the process's own.
    return subprocess.run([path, "-P", str(ctx.lxcpath), "-n", st.name, *extra],
                          check=False).returncode


def cmd_exec(args: argparse.Namespace) -> int:
    """``lxc-attach`` into the running container with the caller's stdio; its exit status."""
    ctx = Ctx(args)
    status, st = status_of(ctx, args.id)
    if status != "running" or st is None:
        raise errdefs.FailedPrecondition(f"container {args.id} is {status}, not running")
    process = json.loads(Path(args.process).read_text()) if args.process else {}
    argv = process.get("args") or args.command
    if not argv:
        raise errdefs.InvalidArgument("process.args: must be a non-empty list")
    env = process.get("env") or ctx.spec(args.id)["process"].get("env", [])
    env = list(env) + list(args.env or [])
    extra = ["--clear-env"] + [f"--set-var={e}" for e in env]
    user = process.get("user") or {}
    uid, gid = user.get("uid"), user.get("gid")
    if args.user:
        uid, _, g = args.user.partition(":")
        gid = g or gid
    if uid is not None:
        extra += ["-u", str(uid), "-g", str(gid if gid is not None else uid)]
    cwd = process.get("cwd") or args.cwd
    if cwd:  # lxc-attach has no working-directory option
        argv = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', cwd, *argv]
    return _lxc_tool("lxc-attach", ctx, st, *extra, "--", *argv)


def cmd_pause(args: argparse.Namespace) -> int:
    return _freeze(args, "lxc-freeze", "running")


def cmd_resume(args: argparse.Namespace) -> int:
    return _freeze(args, "lxc-unfreeze", "paused")


def _freeze(args: argparse.Namespace, tool: str, want: str) -> int:
    ctx = Ctx(args)
    status, st = status_of(ctx, args.id)
    if status != want or st is None:
        raise errdefs.FailedPrecondition(f"container {args.id} is {status}, not {want}")
    if _lxc_tool(tool, ctx, st) != 0:
        raise errdefs.Internal(f"{tool} {st.name} failed")
    return 0


# --- spec / features -------------------------------------------------------------------------


def cmd_spec(args: argparse.Namespace) -> int:
    from shim.oci_defaults import default_spec

    path = Path(args.bundle or ".") / "config.json"
    if path.exists():
        raise errdefs.AlreadyExists(f"{path}: exists, remove it first")
    path.write_text(json.dumps(default_spec(), indent=2) + "\n")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from shim.oci_defaults import features

    host = resources.detect()
    print(json.dumps(features(host.version), indent=2))
    return 0


# --- registration ----------------------------------------------------------------------------


def register(parser: argparse.ArgumentParser, sub: Any) -> None:
    """Add the global options (--log, --log-format, --namespace, --debug; --root is the
    operator CLI's) and the OCI commands."""
    parser.add_argument("--log", help="append log records to this file")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                        help=f"state namespace of the containers (default {DEFAULT_NAMESPACE})")
    parser.add_argument("--debug", action="store_true", help="log debug records")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> Any:
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=_wrap(func))
        return p

    p = add("create", cmd_create, "create a container (held before its program runs)")
    p.add_argument("--bundle", "-b", default=".")
    p.add_argument("--pid-file")
    p.add_argument("--console-socket")
    p.add_argument("id")
    add("start", cmd_start, "run the program of a created container").add_argument("id")
    add("state", cmd_state, "print the OCI state JSON").add_argument("id")
    p = add("kill", cmd_kill, "signal the container's init (SIGTERM by default)")
    p.add_argument("--all", "-a", action="store_true", help="every process of the container")
    p.add_argument("id")
    p.add_argument("signal", nargs="?", default="SIGTERM")
    p = add("delete", cmd_delete, "delete a stopped (or, with --force, any) container")
    p.add_argument("--force", "-f", action="store_true")
    p.add_argument("id")
    p = add("run", cmd_run, "create, start, wait and delete; exits with the container's status")
    p.add_argument("--bundle", "-b", default=".")
    p.add_argument("--pid-file")
    p.add_argument("id")
    p = add("ps", cmd_ps, "processes of the container")
    p.add_argument("--format", "-f", choices=("table", "json"), default="table")
    p.add_argument("id")
    p = add("exec", cmd_exec, "run a process in a running container (lxc-attach)")
    p.add_argument("--process", "-p", help="a process.json (OCI Process)")
    p.add_argument("--env", "-e", action="append", help="KEY=VALUE (repeatable)")
    p.add_argument("--cwd")
    p.add_argument("--user", "-u", help="uid[:gid]")
    p.add_argument("id")
    p.add_argument("command", nargs=argparse.REMAINDER)
    add("pause", cmd_pause, "freeze every process of the container").add_argument("id")
    add("resume", cmd_resume, "thaw a paused container").add_argument("id")
    add("spec", cmd_spec, "write a default config.json").add_argument("--bundle", "-b")
    add("features", cmd_features, "what this runtime supports, as JSON")
