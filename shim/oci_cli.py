"""The OCI runtime command line of ``proxmox-lxcri`` (runc-compatible where runc set the
convention): create, start, state, kill, delete, run, ps, exec, pause, resume, spec, features.

Containers live in the shim's state root and layout (DESIGN.md section 9):
``<root>/containers/<namespace>/<id>/`` holds ``state.json`` (the shim's record,
:class:`runtime.store.TaskRecord`, which ``list`` shows), ``config.json`` (the spec, for the
hooks of later commands) and the backend's files; the LXC containers are under ``<root>/lxc``.
The CLI's namespace is ``cli`` unless ``--namespace`` says otherwise.

Nothing here re-implements the shim: each command drives the backend its record names
(:mod:`runtime.registry`), taken up with ``Backend.attach`` in every later command's process,
and the supervisor's validation and hook functions (:mod:`runtime.supervisor`); ``delete``
cleans up with the backend's ``Cleanup``, as the shim's ``delete`` action does.

How ``create`` leaves a container behind (docs/cli.md has the whole story):

- ``lxcri-start`` (the monitor) is spawned as a child of ``create``, in its own session, with
  the init's gate in hold mode; ``create`` exits once the init reported its set-up done (or
  fails with its error), so the monitor re-parents to the caller's subreaper (or PID 1), as
  runc's init does.
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
import copy
import datetime
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime import errdefs, oci, registry, supervisor
from runtime.backend import (
    Attachable,
    Backend,
    ContainerHandle,
    Execer,
    Monitored,
    Pausable,
)
from runtime.lxc import resources
from runtime.lxc.backend import lxc_name
from runtime.reaper import Reaper
from runtime.store import CLI_OWNER, Store, TaskRecord, state_root, write_private
from runtime.types import CreateConfig, ExecConfig

log = logging.getLogger("proxmox-lxcri")

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

    def dir(self, id: str) -> Path:
        lxc_name(self.namespace, id)  # validates the id (containerd's rule)
        return self.store.container_dir(self.namespace, id)

    def record(self, id: str) -> TaskRecord:
        rec = self.store.load_record(self.namespace, self.check_id(id))
        if rec is None:
            raise errdefs.NotFound(f"container {id} does not exist")
        return rec

    def check_id(self, id: str) -> str:
        self.dir(id)
        return id

    def spec(self, id: str) -> dict[str, Any]:
        data = json.loads((self.dir(id) / "config.json").read_text())
        assert isinstance(data, dict)
        return data

    def config(self, id: str, rec: TaskRecord) -> CreateConfig:
        """The container's CreateConfig as its hooks see it (spec saved by create)."""
        path = self.dir(id) / "config.json"
        spec = self.spec(id) if path.exists() else {}
        return CreateConfig(id=id, namespace=self.namespace, bundle=Path(rec.bundle),
                            spec=spec, state_dir=self.dir(id))

    def backend(self, reaper: Reaper, name: str = registry.DEFAULT, *,
                hold: bool = False) -> Backend:
        """The backend by name (runtime.registry): the same code the shim runs."""
        return registry.open_backend(name or registry.DEFAULT, registry.BackendContext(
            reaper, self.root, cli=True, hold=hold))


def _reaper() -> Reaper:
    reaper = Reaper()
    reaper.install(asyncio.get_running_loop(), subreaper=False)
    return reaper


def attach(ctx: Ctx, id: str, rec: TaskRecord, reaper: Reaper) -> ContainerHandle | None:
    """The backend's handle on the container (made by an earlier command), None once its
    init is gone. Needs a running event loop."""
    backend = ctx.backend(reaper, rec.backend)
    if not isinstance(backend, Attachable):
        raise errdefs.NotImplementedErr(f"the {backend.name} backend cannot serve the OCI CLI")
    try:
        return backend.attach(ctx.dir(id))
    except errdefs.NotFound:
        return None


def status_of(rec: TaskRecord, handle: ContainerHandle | None) -> str:
    """created, running, paused or stopped: the record's status while the init lives (this
    CLI's commands, like the shim's supervisor, keep the record current)."""
    if handle is None:
        return "stopped"
    return rec.status if rec.status in ("created", "running", "paused") else "running"


async def _status(ctx: Ctx, id: str) -> tuple[TaskRecord, str, ContainerHandle | None]:
    rec = ctx.record(id)
    handle = attach(ctx, id, rec, _reaper())
    return rec, status_of(rec, handle), handle


def oci_state(ctx: Ctx, id: str) -> dict[str, Any]:
    """The OCI state (runtime.md "State")."""
    rec, status, handle = asyncio.run(_status(ctx, id))
    return {"ociVersion": rec.oci_version or "1.0.2", "id": id, "status": status,
            "pid": handle.pid if handle is not None else 0,
            "bundle": rec.bundle, "annotations": rec.annotations, "created": rec.created}


# --- create / start / run ----------------------------------------------------------------------


def cmd_create(args: argparse.Namespace) -> int:
    ctx = Ctx(args)
    bundle = Path(args.bundle).resolve()
    spec = oci.load_spec(bundle)
    if spec["process"].get("terminal") and not args.console_socket:
        raise errdefs.InvalidArgument("process.terminal: a terminal needs --console-socket")
    monitor, pid = asyncio.run(_create(ctx, args.id, bundle, spec, args.console_socket))
    if args.pid_file:
        _write_pid_file(Path(args.pid_file), monitor)
    log.info("created %s: init pid %d, monitor pid %d", args.id, pid, monitor)
    return 0


async def _create(ctx: Ctx, id: str, bundle: Path, spec: dict[str, Any],
                  console_socket: str | None) -> tuple[int, int]:
    """Create through the backend, with the supervisor's validation and hooks; returns
    (monitor pid, init pid). The container stays held when this process is gone."""
    directory = ctx.dir(id)
    if ctx.store.load(ctx.namespace, id) is not None:
        raise errdefs.AlreadyExists(f"container {id}")
    config = CreateConfig(id=id, namespace=ctx.namespace, bundle=bundle, spec=spec,
                          state_dir=directory)
    supervisor.validate(config)  # before the console socket learns of a pty
    reaper = _reaper()
    backend = ctx.backend(reaper, hold=True)
    master = _attach_console(console_socket) if console_socket else None
    try:
        handle = await supervisor.create_container(backend, config,
                                                   supervisor.hook_points(reaper, config))
    except BaseException:
        ctx.store.remove(ctx.namespace, id)
        raise
    finally:
        if master is not None:
            os.close(master)
    write_private(directory / "config.json", json.dumps(spec))  # env may hold secrets
    monitor = handle.monitor_pid if isinstance(handle, Monitored) else 0
    ctx.store.save_record(_record(ctx, id, bundle, spec, backend.name, "created", handle.pid,
                                  monitor))
    return monitor or handle.pid, handle.pid


def _record(ctx: Ctx, id: str, bundle: Path, spec: dict[str, Any], backend: str, status: str,
            pid: int, monitor: int = 0) -> TaskRecord:
    return TaskRecord(id=id, namespace=ctx.namespace, bundle=str(bundle), backend=backend,
                      status=status, pid=pid, owner=CLI_OWNER, monitor_pid=monitor,
                      created=_now(), oci_version=str(spec.get("ociVersion") or ""),
                      annotations=oci.spec_annotations(spec))


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
    asyncio.run(_start(Ctx(args), args.id))
    return 0


async def _start(ctx: Ctx, id: str) -> None:
    rec = ctx.record(id)
    reaper = _reaper()
    handle = attach(ctx, id, rec, reaper)
    status = status_of(rec, handle)
    if status != "created" or handle is None:
        raise errdefs.FailedPrecondition(f"container {id} is {status}, not created")
    config = ctx.config(id, rec)
    await supervisor.start_container(handle, supervisor.hook_points(reaper, config))
    rec.status = "running"
    ctx.store.save_record(rec)


def cmd_run(args: argparse.Namespace) -> int:
    """create + start + wait + delete in this process (runc run without --detach); exits with
    the container's status."""
    ctx = Ctx(args)
    bundle = Path(args.bundle).resolve()
    spec = oci.load_spec(bundle)
    return asyncio.run(_run(ctx, args.id, bundle, spec, args.pid_file))


async def _run(ctx: Ctx, id: str, bundle: Path, spec: dict[str, Any],
               pid_file: str | None) -> int:
    if ctx.store.load(ctx.namespace, ctx.check_id(id)) is not None:
        raise errdefs.AlreadyExists(f"container {id}")
    config = CreateConfig(id=id, namespace=ctx.namespace, bundle=bundle, spec=spec,
                          state_dir=ctx.dir(id))
    supervisor.validate(config)
    reaper = _reaper()
    backend = ctx.backend(reaper)
    points = supervisor.hook_points(reaper, config)
    try:
        handle = await supervisor.create_container(backend, config, points)
    except BaseException:
        ctx.store.remove(ctx.namespace, id)
        raise
    try:
        ctx.store.save_record(_record(ctx, id, bundle, spec, backend.name, "running",
                                      handle.pid))
        if pid_file:
            _write_pid_file(Path(pid_file), handle.pid)
        await supervisor.start_container(handle, points)
        return await handle.wait()
    finally:
        await handle.delete()
        await supervisor.deleted(points)
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


def cmd_kill(args: argparse.Namespace) -> int:
    sig = parse_signal(args.signal)
    asyncio.run(_kill(Ctx(args), args.id, sig, args.all))
    return 0


async def _kill(ctx: Ctx, id: str, sig: int, all: bool) -> None:
    """The backend's kill, as the shim's Kill calls it (a created container's gate and the
    signals that do not end it are the backend's business)."""
    _rec, _state, handle = await _status(ctx, id)
    if handle is None:
        raise errdefs.NotFound(f"container {id}: process already finished")
    handle.kill(sig, all)


def cmd_delete(args: argparse.Namespace) -> int:
    ctx = Ctx(args)
    try:
        rec = ctx.record(args.id)
    except errdefs.NotFound:
        if args.force:
            return 0  # runc: delete --force of a missing container succeeds
        raise
    if rec.owner != CLI_OWNER and not args.force:
        raise errdefs.FailedPrecondition(f"container {args.id} belongs to a shim; use --force")
    asyncio.run(_delete(ctx, args.id, rec, args.force))
    return 0


async def _delete(ctx: Ctx, id: str, rec: TaskRecord, force: bool) -> None:
    reaper = _reaper()
    handle = attach(ctx, id, rec, reaper)
    status = status_of(rec, handle)
    if status in ("running", "paused") and not force:
        raise errdefs.FailedPrecondition(
            f"cannot delete container {id} that is {status}: stop it or use --force")
    if handle is not None and isinstance(handle, Pausable):
        # A frozen process cannot die of SIGKILL (cgroup v1); thawed whoever froze it.
        with contextlib.suppress(errdefs.ErrdefsError, OSError):
            await handle.resume()
    config = ctx.config(id, rec)
    # The delete action's own clean-up, by the backend that made the container.
    cleanup = registry.cleanup(rec.backend or registry.DEFAULT)
    await asyncio.to_thread(cleanup, ctx.dir(id), Path(rec.bundle or "/"))
    await supervisor.deleted(supervisor.hook_points(reaper, config))
    ctx.store.remove(ctx.namespace, id)


def cmd_ps(args: argparse.Namespace) -> int:
    pids = asyncio.run(_pids(Ctx(args), args.id))
    if args.format == "json":
        print(json.dumps(pids))
        return 0
    print("PID     CMD")
    for pid in pids:
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            print(f"{pid:<7} {cmd.strip()}")
    return 0


async def _pids(ctx: Ctx, id: str) -> list[int]:
    _rec, _state, handle = await _status(ctx, id)
    return handle.pids() if handle is not None else []


# --- exec / pause / resume -------------------------------------------------------------------


def exec_process(args: argparse.Namespace, spec: dict[str, Any]) -> dict[str, Any]:
    """The OCI Process to exec, as ``runc exec`` builds it (its ``getProcess``): ``--process``
    as it is; otherwise the container's own process (env, cwd, user…) with the command as
    args, ``--cwd`` replacing the cwd, ``--env`` appended and ``--user uid[:gid]`` replacing
    the ids, never a terminal. The backend then runs it exactly as the shim's Exec does."""
    if args.process:
        process = json.loads(Path(args.process).read_text())
        if not isinstance(process, dict):
            raise errdefs.InvalidArgument("process: must be a JSON object (an OCI Process)")
    else:
        process = copy.deepcopy(spec.get("process") or {})
        process["args"] = list(args.command)
        process["terminal"] = False
        process.pop("consoleSize", None)
        if args.cwd:
            process["cwd"] = args.cwd
        process["env"] = list(process.get("env") or []) + list(args.env or [])
        if args.user:
            uid, _, gid = args.user.partition(":")
            user = dict(process.get("user") or {})
            try:
                user["uid"] = int(uid)
                if gid:
                    user["gid"] = int(gid)
            except ValueError:
                raise errdefs.InvalidArgument(
                    f"user: {args.user!r} is not uid[:gid] (numbers)") from None
            process["user"] = user
    argv = process.get("args")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise errdefs.InvalidArgument("process.args: must be a non-empty list of strings")
    return dict(process)


def cmd_exec(args: argparse.Namespace) -> int:
    """Run a process in the running container with the caller's stdio; its exit status."""
    return asyncio.run(_exec(Ctx(args), args))


async def _exec(ctx: Ctx, args: argparse.Namespace) -> int:
    rec, status, handle = await _status(ctx, args.id)
    if status != "running" or handle is None:
        raise errdefs.FailedPrecondition(f"container {args.id} is {status}, not running")
    if not isinstance(handle, Execer):
        raise errdefs.NotImplementedErr(f"the {rec.backend} backend cannot exec")
    process = exec_process(args, ctx.spec(args.id))
    proc = await handle.exec(ExecConfig(exec_id=f"cli-{os.getpid()}", process=process))
    try:
        return await proc.wait()
    finally:
        await proc.close()


def cmd_pause(args: argparse.Namespace) -> int:
    asyncio.run(_freeze(Ctx(args), args.id, True))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    asyncio.run(_freeze(Ctx(args), args.id, False))
    return 0


async def _freeze(ctx: Ctx, id: str, pause: bool) -> None:
    """The backend's pause (the cgroup freezer, as the shim's Pause), then the record."""
    rec, status, handle = await _status(ctx, id)
    want = "running" if pause else "paused"
    if status != want or handle is None:
        raise errdefs.FailedPrecondition(f"container {id} is {status}, not {want}")
    if not isinstance(handle, Pausable):
        raise errdefs.NotImplementedErr(f"the {rec.backend} backend cannot pause")
    if pause:
        await handle.pause()
    else:
        await handle.resume()
    rec.status = "paused" if pause else "running"
    ctx.store.save_record(rec)


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
