"""``LxcBackend``: OCI containers as LXC containers (DESIGN.md 5.1).

One container = one ``lxcri-start <lxcpath> <name> <log> <level>`` child of the daemon (LXC's
start mode in the foreground, like ``lxc-start -F``, but exiting with the container's status:
``runtime/lxc/init/lxcri-start.c``), spawned through the daemon's single
:class:`~runtime.reaper.Reaper`:

- its config file is ``<lxcpath>/<name>/config``, rendered by :mod:`runtime.lxc.config`;
- its stdio *is* the container's stdio (``lxc.console.path = none``);
- the container's first process is the project's init (:mod:`runtime.lxc.owninit`), which
  applies the process settings, reports "ready" or its set-up error over the gate and waits
  there (:mod:`runtime.lxc.gate`; the ``lxc.hook.start-host`` hook reports its host PID) →
  the OCI "created" state, or a create error as runc's; on start it execve()s the program:
  the program is PID 1 of the container, with the PID the gate reported, as under runc. Its
  exit status is the monitor's (7 for ``exit 7``, 128 + signal for a signal death).

A task restored from CRIU images (``CreateConfig.restore``) is made by ``lxc-checkpoint -r``
(:mod:`runtime.lxc.restore`); checkpointable containers (``CreateConfig.checkpointable``) are
dumped by ``lxc-checkpoint`` (:mod:`runtime.lxc.checkpoint`).

The bundle's validation against the OCI spec and the OCI hooks are not this backend's: the
supervisor runs them around its calls (runtime.supervisor), for every backend alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from runtime import cgroups_path, errdefs, store, systemd_scope
from runtime.lxc import (
    cgroup,
    cleanup,
    criu_stdio,
    nsfiles,
    owninit,
    resources,
    rootpath,
    seccomp,
    security,
    state,
)
from runtime.lxc import config as lxcconf
from runtime.lxc import gate as gates
from runtime.lxc.exec import AttachContext
from runtime.lxc.gate import Gate, hook_command
from runtime.lxc.mount import mount_all, unmount_all
from runtime.lxc.mountpoints import prepare as prepare_mount_points
from runtime.lxc.ops import ContainerOps
from runtime.lxc.rootfs import resolve_in_rootfs
from runtime.reaper import Child, Reaper
from runtime.stdio import ProcessIO, TerminalIO, fd_ready, open_stdio
from runtime.types import CreateConfig, RestoreSource, Stdio

log = logging.getLogger(__name__)
T = TypeVar("T")

#: containerd's identifier rule (identifiers.Validate), also safe as an LXC name and cgroup.
_ID = re.compile(r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$")
#: Signals whose default action does not end a process: sending one to a created container
#: just delivers it; any other signal makes the created container exit (see kill()).
_HARMLESS = frozenset({signal.SIGCHLD, signal.SIGCONT, signal.SIGURG, signal.SIGWINCH,
                       signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
#: The host PATH the monitor itself runs with; LXC does not pass it into the container.
_HOST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def lxc_name(namespace: str, container_id: str) -> str:
    """The LXC container name: ``<namespace>-<id>`` (unique across containerd namespaces)."""
    for field, value in (("namespace", namespace), ("id", container_id)):
        if value and (len(value) > 76 or not _ID.fullmatch(value)):
            raise errdefs.InvalidArgument(f"{field}: {value!r} is not a valid identifier")
    if not container_id:
        raise errdefs.InvalidArgument("id: must not be empty")
    return f"{namespace}-{container_id}" if namespace else container_id


def rootfs_from_spec(config: CreateConfig) -> Path:
    """``root.path`` of the spec: relative to the bundle, or absolute (shim-protocol 2.10)."""
    root = config.spec.get("root") or {}
    path = root.get("path", "rootfs") if isinstance(root, dict) else None
    if not isinstance(path, str) or not path:
        raise errdefs.InvalidArgument("root.path: must be a non-empty string")
    return Path(path) if path.startswith("/") else config.bundle / path


def lxc_log_errors(log_file: Path, limit: int = 8) -> str:
    """The ERROR lines of an LXC log, without their timestamp prefix, for error messages."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    errors = [ln.split(" - ", 1)[-1] for ln in lines if " ERROR " in ln]
    return "; ".join(errors[-limit:])


def _check_bind_sources(spec: dict[str, Any]) -> None:
    """A missing bind source is the caller's error: say so before LXC would fail on it (and
    before ``create=file`` would leave an empty file in the rootfs)."""
    for i, m in enumerate(spec.get("mounts", [])):
        options = m.get("options", [])
        if m.get("type") == "bind" or "bind" in options or "rbind" in options:
            source = m.get("source", "")
            if not os.path.exists(source):
                raise errdefs.NotFound(f"mounts[{i}].source: {source}: no such file or directory")


def _make_cwd_before_readonly_root(spec: dict[str, Any], rootfs: Path) -> None:
    """A missing cwd in an image whose root the spec makes read-only is made here, inside the
    rootfs (runtime.lxc.rootpath: symlinks followed inside it), before the mount hook's
    read-only remount: runc makes it before that remount too. The init makes every other
    missing cwd, inside the container's mounts; what cannot be made here is left to it, and
    its error is the create's."""
    cwd = spec["process"].get("cwd")
    if not (spec.get("root") or {}).get("readonly") or not isinstance(cwd, str) or cwd == "/":
        return
    with contextlib.suppress(OSError):
        root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with rootpath.resolve(root_fd, cwd) as found:
                if found.where == "missing":
                    rootpath.make(found, "dir")
        finally:
            os.close(root_fd)


@functools.cache
def _host_lsm() -> tuple[bool, bool]:
    """(AppArmor enforced, SELinux enforced) on this host, read once."""
    try:
        apparmor = Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y"
    except OSError:
        apparmor = False
    return apparmor, Path("/sys/fs/selinux/enforce").exists()


def _host_path_kind(path: str) -> str:
    """"dir", "file" or "" (absent) for a /proc or /sys path, as the host sees it."""
    if os.path.isdir(path):
        return "dir"
    return "file" if os.path.lexists(path) else ""


def _path_kind(rootfs: Path) -> Callable[[str], str]:
    """The kind of a masked path ("dir", "file", "special" or "" for absent): /proc and /sys
    as the host sees them (the container's are the same kernel's), any other path as it is in
    the rootfs. Only lstat(2): a FIFO, socket or device is "special", masked by the mount hook
    without being opened (setup_hooks.path_entries)."""
    def kind(path: str) -> str:
        if path.startswith(("/proc/", "/sys/")) or path in ("/proc", "/sys"):
            return _host_path_kind(path)
        try:
            target = resolve_in_rootfs(rootfs, path)
        except OSError:
            return ""
        try:
            mode = os.lstat(target).st_mode
        except OSError:
            return ""
        if stat.S_ISDIR(mode):
            return "dir"
        return "file" if stat.S_ISREG(mode) or stat.S_ISLNK(mode) else "special"
    return kind


def _inherited_io(spec: dict[str, Any]) -> ProcessIO:
    """The caller's own stdin, stdout and stderr (the CLI's pass-through). With
    ``process.terminal`` and a pty on stdin (``create --console-socket`` put it there), that pty
    becomes the monitor's controlling terminal, which LXC needs to proxy the container's
    console (see configure_console)."""
    io = ProcessIO(stdin=0, stdout=1, stderr=2)
    io.ctty = bool(spec["process"].get("terminal")) and os.isatty(0)
    return io


def stdio_keys(io: ProcessIO, config: CreateConfig) -> dict[int, str]:
    """[storage] CRIU's keys of the container's streams (runtime.lxc.criu_stdio); none for a
    terminal, which CRIU cannot take over from outside the container."""
    if isinstance(io, TerminalIO) or config.stdio.terminal:
        return {}
    return criu_stdio.keys_of((io.stdin, io.stdout, io.stderr),
                              (config.stdio.stdin, config.stdio.stdout, config.stdio.stderr))


@dataclass(frozen=True)
class _Prepared:
    name: str
    rootfs: Path
    config_text: str
    #: The in-container init's directory (runtime.lxc.owninit).
    init_dir: Path


#: The monitor ``make setup`` builds (runtime/lxc/init/lxcri-start.c).
MONITOR = Path(__file__).with_name("init") / "lxcri-start"


class LxcBackend:
    """Creates containers with ``lxcri-start``; one instance per daemon."""

    name = "lxc"

    def __init__(self, reaper: Reaper, lxcpath: Path, *, log_level: str = "WARN",
                 gate_timeout: float = 30.0, hold_gate: bool = False,
                 inherit_stdio: bool = False) -> None:
        """``hold_gate`` and ``inherit_stdio`` are for the ``proxmox-lxcri`` CLI: the gate
        outlives the creating process (the init holds it: "gate hold"), and a container
        without stdio paths gets the caller's stdin, stdout and stderr (runc's pass-through)
        instead of /dev/null."""
        self._hold_gate = hold_gate
        self._inherit_stdio = inherit_stdio
        self._reaper = reaper
        self._lxcpath = lxcpath
        self._log_level = log_level
        self._gate_timeout = gate_timeout
        # One PATH search each: every task's daemon opens a backend (runtime.registry).
        lxc_attach = shutil.which("lxc-attach")
        if lxc_attach is None:
            raise errdefs.Unavailable("lxc-attach: not found in PATH (install Debian's lxc)")
        self._monitor = MONITOR
        self._lxc_attach = lxc_attach
        self._lxc_start = shutil.which("lxc-start") or "lxc-start"
        self._lxc_checkpoint = shutil.which("lxc-checkpoint") or "lxc-checkpoint"

    async def create(self, config: CreateConfig) -> LxcContainer:
        """Prepare the rootfs, write the LXC config, spawn the monitor and wait for the gate.
        On any failure everything done so far is undone (reverse order)."""
        return await self._create(config, None)

    async def restore(self, config: CreateConfig, source: RestoreSource) -> LxcContainer:
        """[storage] The container with its processes restored from CRIU images by
        ``lxc-checkpoint -r``, frozen until start (runtime.lxc.restore)."""
        if source.format != "criu":
            raise errdefs.InvalidArgument(f"restore: {source.format!r} images: the LXC "
                                          "backend restores CRIU images only")
        return await self._create(config, source)

    async def _create(self, config: CreateConfig, source: RestoreSource | None
                      ) -> LxcContainer:
        # What LXC cannot express (the supervisor checked the spec against config.md).
        lxcconf.validate(config.spec)
        nsfiles.check_paths(config.spec)
        name = lxc_name(config.namespace, config.id)
        lxc_dir = self._lxcpath / name
        if lxc_dir.exists():
            raise errdefs.AlreadyExists(f"container {name}: {lxc_dir} exists")
        # 0700 (0711 with a user namespace, whose mapped root reaches bind sources here):
        # runtime.store, issue 12.
        store.private_dir(config.state_dir, traverse=lxcconf.namespace_plan(config.spec).user)
        log_file = config.state_dir / cleanup.LXC_LOG
        st = state.PersistedState(name=name, lxcpath=str(self._lxcpath),
                                  bundle=str(config.bundle))
        apparmor_default = await self._criu_apparmor(config, source)
        with contextlib.ExitStack() as undo:
            undo.callback(log_file.unlink, True)  # its ERROR lines are in the raised error
            prepared = self._prepare(config, name, st, undo, source, apparmor_default)
            self._lxcpath.mkdir(parents=True, exist_ok=True)
            try:
                lxc_dir.mkdir(mode=0o700)
            except FileExistsError:  # a concurrent create of the same container won
                raise errdefs.AlreadyExists(f"container {name}: {lxc_dir} exists") from None
            undo.callback(shutil.rmtree, lxc_dir, True)
            (lxc_dir / "config").write_text(prepared.config_text)
            io = (_inherited_io(config.spec)
                  if self._inherit_stdio and config.stdio == Stdio()
                  else open_stdio(config.stdio, config.spec["process"].get("consoleSize")))
            undo.callback(io.close)
            if source is not None:
                from runtime.lxc import restore  # its container class extends this module's

                handle: LxcContainer = await restore.restore(
                    self._reaper, self._lxc_checkpoint, st, config.state_dir,
                    source.images, prepared.init_dir, io, _HOST_ENV,
                    stdio_keys(io, config))
            else:
                gate = Gate(config.state_dir, owninit.root_owner(config.spec))
                undo.callback(gate.close)
                exec_fd = owninit.open_exec_fifo(prepared.init_dir)
                undo.callback(os.close, exec_fd)
                child = self._spawn(name, config.state_dir, io,
                                    (config.spec["process"].get("user") or {}).get("umask"))
                keys = stdio_keys(io, config)
                io.spawned()
                handle = await self._await_gate(config, st, gate, child, io, prepared.init_dir,
                                                exec_fd)
                handle.criu_stdio = keys
            handle.attach = self._attach_context(name, prepared.rootfs, prepared.init_dir)
            undo.pop_all()
        return handle

    def _attach_context(self, name: str, rootfs: Path, init_dir: Path) -> AttachContext:
        return AttachContext(self._reaper, self._lxc_attach, self._lxcpath, name, rootfs,
                             init_dir, inherit_stdio=self._inherit_stdio,
                             lxc_checkpoint=self._lxc_checkpoint)

    def attach(self, state_dir: Path) -> LxcContainer:
        """A container this backend made in another process (the OCI CLI's later commands),
        from its persisted state (runtime.lxc.state): NotFound when there is none."""
        from runtime.lxc.attached import AttachedContainer  # extends this module's class

        st = state.load(state_dir)
        if st is None:
            raise errdefs.NotFound(f"{state_dir}: no LXC container state")
        handle = AttachedContainer(st, state_dir)
        handle.attach = self._attach_context(st.name, Path(st.rootfs) if st.rootfs else
                                             Path(st.bundle) / "rootfs",
                                             state_dir / owninit.DIR_NAME)
        return handle

    async def _criu_apparmor(self, config: CreateConfig, source: RestoreSource | None) -> str:
        """The AppArmor profile for a spec without one: LXC's generated profile, or for a
        container CRIU may dump (or restores) LXC's fixed default, loaded if it is not yet
        (see security.CRIU_APPARMOR_PROFILE)."""
        own = config.checkpointable or source is not None
        if not own or not _host_lsm()[0] or config.spec["process"].get("apparmorProfile"):
            return security.DEFAULT_APPARMOR_PROFILE
        profile = security.CRIU_APPARMOR_PROFILE
        try:
            loaded = Path("/sys/kernel/security/apparmor/profiles").read_text()
        except OSError:
            loaded = ""
        if f"{profile} (" in loaded:
            return profile
        policy = "/etc/apparmor.d/lxc-containers"
        r = await self._reaper.run(["apparmor_parser", "-r", "-W", policy], timeout=120)
        if r.returncode != 0:
            raise errdefs.FailedPrecondition(
                f"AppArmor profile {profile} for a CRIU-checkpointable container: "
                f"apparmor_parser -r {policy} failed: "
                f"{r.stderr.decode(errors='replace').strip() or r.returncode}")
        return profile

    def _prepare(self, config: CreateConfig, name: str, st: state.PersistedState,
                 undo: contextlib.ExitStack, source: RestoreSource | None = None,
                 apparmor_default: str = security.DEFAULT_APPARMOR_PROFILE) -> _Prepared:
        """Rootfs (mounted if containerd gave mounts), program check, persisted state,
        LXC config text. Registers the undo steps."""
        undo.callback(state.remove, config.state_dir)
        if config.rootfs:
            rootfs = config.bundle / "rootfs"
            rootfs.mkdir(mode=0o711, exist_ok=True)
            st.mounts = mount_all(config.rootfs, rootfs)
            undo.callback(unmount_all, st.mounts)
        else:
            rootfs = rootfs_from_spec(config)
        if not rootfs.is_dir():
            raise errdefs.NotFound(f"root.path: rootfs {rootfs} does not exist")
        st.rootfs = str(rootfs)
        _check_bind_sources(config.spec)
        process = config.spec["process"]
        # The program is looked up by the init, inside the container's mounts (a bind-mounted
        # program exists there only), as runc's init does before its exec FIFO wait.
        own_cgroup = cgroup.own_cgroup()
        st.cgroup = cgroups_path.resolve((config.spec.get("linux") or {}).get("cgroupsPath"),
                                         own_cgroup)
        if st.cgroup:
            cgroup.clear_stale(st.cgroup)
        # A failed create leaves no cgroup behind: LXC removes its own when it aborts cleanly,
        # not when its monitor had to be killed (empty ones only; the parents stay).
        undo.callback(cgroup.remove_lxc_cgroups, name, st.cgroup)
        # Persisted before anything runs, so `delete` can undo the mounts (and remove the
        # cgroup) even if the daemon dies before the gate reports.
        state.save(config.state_dir, st)
        notes: list[str] = []
        policy = lxcconf.seccomp_policy(config.spec, notes)
        directives = security.process_directives(
            process, notes, seccomp_flags=policy.flags if policy is not None else None)
        directives += security.propagation_directive(config.spec)
        if source is None:  # a CRIU restore's processes are past the gate
            directives += gates.directive(hold=self._hold_gate,
                                          hooks=_has_create_hooks(config.spec))
        bpf = seccomp.compile_bpf(policy) if policy is not None else None
        init_dir = owninit.prepare(
            config.state_dir, process["args"], config.stdio, directives, bpf,
            inherited=self._inherit_stdio and config.stdio == Stdio(),
            shared_dir=self._lxcpath.parent / "init-cache",
            owner=owninit.root_owner(config.spec))
        undo.callback(shutil.rmtree, init_dir, True)
        # Mount points are made here, inside the rootfs, never by LXC through image symlinks.
        plan = prepare_mount_points(config.spec, rootfs, lxcconf.PROVIDED_BY_LXC)
        _make_cwd_before_readonly_root(config.spec, rootfs)
        apparmor, selinux = _host_lsm()
        params = lxcconf.Params(
            name=name, rootfs=str(rootfs), mount_plan=plan,
            # A CRIU restore has no gate: its processes are past that point.
            gate="" if source is not None else hook_command(init_dir),
            own_init_dir=str(init_dir), path_kind=_path_kind(rootfs),
            criu=config.checkpointable or source is not None,
            default_apparmor=apparmor_default,
            log_file=str(config.state_dir / cleanup.LXC_LOG), log_level=self._log_level,
            default_hostname=config.id, shim_pid=os.getpid(), source_is_dir=os.path.isdir,
            cgroup=resources.detect(),
            rootfs_mount=self._rootfs_mount(), own_cgroup=own_cgroup,
            apparmor=apparmor, selinux=selinux)
        text = lxcconf.render(lxcconf.lxc_config(config.spec, params, notes))
        for note in notes:  # DESIGN.md section 8: a downgrade is logged, never silent
            log.warning("downgraded: %s", note, extra={"container_id": config.id})
        return _Prepared(name, rootfs, text, init_dir)

    def _rootfs_mount(self) -> str:
        """LXC's compiled-in ``lxc.rootfs.mount`` where it exists (Debian and Proxmox: the
        multiarch path), else an empty directory of ours: any directory suffices (man
        lxc.container.conf), but mount entries must name it."""
        for candidate in ("/usr/lib/x86_64-linux-gnu/lxc/rootfs", "/usr/lib/lxc/rootfs"):
            if os.path.isdir(candidate):
                return candidate
        own = self._lxcpath.parent / "rootfs-mount"
        own.mkdir(parents=True, exist_ok=True)
        return str(own)

    def _spawn(self, name: str, state_dir: Path, io: ProcessIO,
               umask: int | None = None) -> Child:
        if not self._monitor.is_file():
            raise errdefs.FailedPrecondition(
                f"{self._monitor}: the container monitor is not built (run `make setup`, "
                "which compiles runtime/lxc/init/lxcri-start.c)")
        # In the foreground, as this child, with its stdio as the container's; the program's
        # argv is in the init's directory (runtime.lxc.owninit).
        argv = [str(self._monitor), str(self._lxcpath), name,
                str(state_dir / cleanup.LXC_LOG), self._log_level]
        # Its own session: a signal to the daemon's process group never reaches the container.
        return self._reaper.spawn(argv, stdin=io.stdin, stdout=io.stdout, stderr=io.stderr,
                                  env=_HOST_ENV, cwd="/", new_session=True,
                                  controlling_tty=io.ctty, umask=umask)

    async def _await_gate(self, config: CreateConfig, st: state.PersistedState, gate: Gate,
                          child: Child, io: ProcessIO, init_dir: Path,
                          exec_fd: int) -> LxcContainer:
        """The init's PID and the outcome of its set-up from the gate, racing the monitor's
        early exit and a timeout. An error of the init's set-up is the create's. With
        create-time hooks the set-up comes later (:meth:`LxcContainer.finish_create`)."""
        log_file = config.state_dir / cleanup.LXC_LOG
        exited = asyncio.ensure_future(child.wait())
        try:
            st.monitor_pid, st.monitor_start_time = child.pid, state.start_time(child.pid)
            state.save(config.state_dir, st)  # `delete` can stop a monitor held in the gate
            pid = await _first(gate.pid(), exited, self._gate_timeout)
            if pid is None:
                details = lxc_log_errors(log_file) or "no ERROR lines in the LXC log"
                raise errdefs.Internal(f"LXC exited with status {exited.result()} "
                                       f"before the container was created: {details}")
            st.pid, st.pid_start_time = pid, state.start_time(pid)
            state.save(config.state_dir, st)
            await self._register_scope(config, st, pid)
            later = _has_create_hooks(config.spec)
            if not later:
                await setup_outcome(gate, exited, self._gate_timeout)
            handle = LxcContainer(st, config.state_dir, gate, child, io, init_dir, exec_fd)
            handle.setup_pending, handle.setup_timeout = later, self._gate_timeout
            return handle
        except BaseException:
            await _stop_spawn(gate, child, st.name, st.cgroup)
            await io.aclose()
            raise
        finally:
            exited.cancel()

    async def _register_scope(self, config: CreateConfig, st: state.PersistedState,
                              pid: int) -> None:
        """Under systemd, a cgroupsPath in systemd's form becomes a transient scope unit
        with the init in it, as runc's systemd driver makes it (runtime.systemd_scope). LXC
        has made the directory and moved the init there by the time the gate reports."""
        linux = config.spec.get("linux") or {}
        if not st.cgroup or not systemd_scope.booted():
            return
        scope = systemd_scope.scope_for(linux.get("cgroupsPath"))
        if scope is None:
            return
        st.systemd_unit = scope.unit
        state.save(config.state_dir, st)  # `delete` stops it even if the daemon dies now
        await systemd_scope.register(self._reaper.run, scope, pid, linux.get("resources"),
                                     st.cgroup)


def _has_create_hooks(spec: dict[str, Any]) -> bool:
    """Hooks the supervisor runs between the backend's create and the init's set-up."""
    found = spec.get("hooks") or {}
    return any(found.get(kind) for kind in ("prestart", "createRuntime", "createContainer"))


async def _first(what: Awaitable[T], exited: asyncio.Future[int],
                 timeout: float) -> T | None:
    """``what``'s result, or None when ``exited`` (the container's end) comes first; raises
    DeadlineExceeded after ``timeout`` seconds."""
    task = asyncio.ensure_future(what)
    both: set[asyncio.Future[Any]] = {task, exited}
    try:
        done, _ = await asyncio.wait(both, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()
    if task in done:
        return task.result()
    if exited in done:
        return None
    raise errdefs.DeadlineExceeded(
        f"the gate did not report the container's init ready within {timeout:g}s")


async def setup_outcome(gate: Gate, exited: asyncio.Future[int], timeout: float) -> None:
    """Wait for the init's line after its set-up: returns on "ready", raises its error (the
    create's), or an error of its own when the init ended without a line."""
    async def ready() -> bool:
        await gate.result()
        return True

    if await _first(ready(), exited, timeout):
        return
    # The init's error line is written before it exits: seen here if the exit won.
    while (line := gate.pending()) is not None:
        if not line.isdigit():
            gates.outcome(line)
    # The init ran but could not say "ready": its last steps before that are the seccomp
    # filter and the write; runc's init fails there too (at start).
    raise errdefs.FailedPrecondition(
        f"the container init ended with status {exited.result()} before it reported its "
        "set-up (after the seccomp filter it needs write(2) and read(2) for the gate, and "
        "execve(2))")


def zombie_status(pid: int) -> int | None:
    """The exit status of dead, unreaped ``pid`` (proc(5): the last field of
    /proc/PID/stat, exit_code, is the waitpid(2) status), shell-style; None if unknown."""
    try:
        stat_text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat_text.rsplit(")", 1)[-1].split()
    if not fields or fields[0] != "Z":
        return None
    code = int(fields[-1])
    return (code >> 8) & 0xFF if code & 0x7F == 0 else 128 + (code & 0x7F)


async def _stop_spawn(gate: Gate, child: Child, name: str, path: str = "") -> None:
    """Undo a spawn whose gate never reported: abort the gate (buffered even if the hook has
    not opened its FIFO yet), give LXC a moment to abort on its own, then SIGKILL. A killed
    monitor leaves its cgroups (lxc.monitor.<name>, lxc.payload.<name>) and maybe the
    container's first process behind: those are killed and removed here."""
    gate.abort()
    try:
        async with asyncio.timeout(5.0):
            await child.wait()
    except TimeoutError:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    for _ in range(100):
        left = cgroup.lxc_cgroup_procs(name, path)
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.02)  # the daemon (a subreaper) reaps the orphans
    cgroup.remove_lxc_cgroups(name, path)


#: How long LXC's monitor may take to end after the container's process did.
MONITOR_GRACE = 5.0
#: How long a monitor that has reaped the container's process may take to end: it knows the
#: status and is finishing (LXC's lxc_end: post-stop hooks, the unload of its generated
#: AppArmor profile by apparmor_parser, measured above MONITOR_GRACE under QEMU TCG).
MONITOR_END_TIMEOUT = 60.0


class LxcContainer(ContainerOps):
    """A created container: init held by the gate until :meth:`start`."""

    def __init__(self, st: state.PersistedState, state_dir: Path, gate: Gate | None,
                 child: Child | None, io: ProcessIO, init_dir: Path | None,
                 exec_fd: int | None = None) -> None:
        self._st = st
        self._state_dir = state_dir
        self._gate = gate
        self._child = child
        self._io = io
        #: The in-container init's directory (runtime.lxc.owninit).
        self._init_dir = init_dir
        #: The read end of the init's exec FIFO: EOF once the program has been exec'd.
        self._exec_fd = exec_fd
        #: [storage] CRIU's keys of the streams that lead outside (runtime.lxc.criu_stdio).
        self.criu_stdio: dict[int, str] = {}
        self._pidfd: int | None = os.pidfd_open(st.pid)
        self._cgroup = cgroup.cgroup_dir(st.pid, st.name, st.cgroup)
        self._started = False
        self._deleted = False
        self._created_kill: int | None = None
        self._sigkilled = False
        #: The init waits for "setup" until the create-time hooks ran (finish_create).
        self.setup_pending = False
        self.setup_timeout = 30.0
        self._exit = asyncio.get_running_loop().create_task(self._watch())

    @property
    def pid(self) -> int:
        return self._st.pid

    @property
    def monitor_pid(self) -> int:
        """LXC's monitor (lxcri-start), which exits with the program's status."""
        return self._st.monitor_pid

    @property
    def name(self) -> str:
        """The LXC container name (``lxc-ls -P <lxcpath>`` shows it while it runs)."""
        return self._st.name

    async def _wait_init(self) -> int:
        """The program's exit status: the monitor's (runtime/lxc/init/lxcri-start.c).

        LXC's monitor can hang: a container killed right after the gate opened, while LXC
        still finishes its set-up, leaves the monitor blocked reading its sync socket with
        the dead process a zombie (measured: `unix_stream_read_generic`, about 1 run in 20 at
        a SIGKILL 0-100 ms after Start). So the container's process is watched too: once it
        is dead and the monitor has not ended within MONITOR_GRACE, the status is read from
        the zombie (/proc/PID/stat's exit_code) and the monitor is killed. A monitor that
        has reaped it (no zombie left) is not stuck but finishing, and has the status: it
        gets up to MONITOR_END_TIMEOUT more before it is killed (then 255, unknown)."""
        assert self._child is not None
        monitor = asyncio.ensure_future(self._child.wait())
        if self._pidfd is None:
            return await monitor
        died: asyncio.Future[Any] = asyncio.ensure_future(fd_ready(self._pidfd))
        try:
            await asyncio.wait({monitor, died}, return_when=asyncio.FIRST_COMPLETED)
            if monitor.done():
                return monitor.result()
            try:
                async with asyncio.timeout(MONITOR_GRACE):
                    return await asyncio.shield(monitor)
            except TimeoutError:
                status = zombie_status(self.pid)
            if status is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(MONITOR_END_TIMEOUT):
                        return await asyncio.shield(monitor)
            log.warning("container %s: LXC's monitor did not end after the container did; "
                        "killed it", self.name)
            self._child.send_signal(signal.SIGKILL)
            await monitor
            return status if status is not None else 255
        finally:
            died.cancel()

    async def _watch(self) -> int:
        status = await self._wait_init()
        await self._oom_settled()  # an OOM kill is reported before the exit, as by runc
        if self._created_kill is not None:
            # Killed at the gate: the init ended there; the status is the signal's, as
            # runc reports for a created container killed before its program ran.
            status = 128 + self._created_kill
        elif status == 255 and self._sigkilled:
            # SIGKILLed after Start but before LXC had exec'd the init: LXC calls that a
            # failed start (lxcri-start's 255, measured); the process died of our SIGKILL.
            status = 128 + signal.SIGKILL
        self._st.exit_status = status
        self._close_exec_fd()
        if self._gate is not None:
            self._gate.close()
        with contextlib.suppress(OSError):
            # Not if `delete` (cleanup.cleanup) already removed it: that would resurrect it.
            state.save(self._state_dir, self._st, only_if_present=True)
        return status

    async def finish_create(self) -> None:
        """The init's set-up, after the create-time hooks (runtime.backend.FinishesCreate):
        its error is the create's."""
        if not self.setup_pending or self._gate is None:
            return
        self.setup_pending = False
        self._gate.setup()
        exited: asyncio.Future[int] = asyncio.ensure_future(asyncio.shield(self._exit))
        try:
            await setup_outcome(self._gate, exited, self.setup_timeout)
        finally:
            exited.cancel()

    async def start(self) -> None:
        if self._exit.done():
            raise errdefs.FailedPrecondition(f"container {self.name} has already exited")
        if self._started:
            raise errdefs.FailedPrecondition(f"container {self.name} is already started")
        self._started = True
        if self._exec_fd is None:
            self._exec_fd = self._late_exec_fd()  # before the gate opens: EOF means execve
        self._release_gate()
        # Start returns once the program runs, as runc's: the supervisor's poststart hooks
        # follow (runtime.md "Lifecycle" 9-10), after the init's execve.
        await self._exec_done()

    def _release_gate(self) -> None:
        if self._gate is not None:
            self._gate.release()

    def _abort_gate(self) -> None:
        if self._gate is not None:
            self._gate.abort()

    def _late_exec_fd(self) -> int | None:
        """The exec FIFO's read end for a start by another process than the creating one
        (runtime.lxc.attached); None here."""
        return None

    async def _exec_done(self) -> None:
        """Until the init has exec'd the program (its end of the exec FIFO closed at the
        execve), or failed, or the container ended."""
        fd = self._exec_fd
        if fd is None:
            return
        ended: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(self._exit))
        try:
            while True:
                ready: asyncio.Future[Any] = asyncio.ensure_future(fd_ready(fd))
                done, _ = await asyncio.wait({ready, ended},
                                             return_when=asyncio.FIRST_COMPLETED)
                ready.cancel()
                if ended in done:
                    return
                try:
                    if os.read(fd, 64) == b"":
                        return  # every writer closed: the init's descriptor, at its execve
                except BlockingIOError:
                    continue
        finally:
            ended.cancel()
            self._close_exec_fd()

    def _close_exec_fd(self) -> None:
        if self._exec_fd is not None:
            os.close(self._exec_fd)
            self._exec_fd = None

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def kill(self, signal: int, all: bool = False) -> None:
        """Signal the init from the host (DESIGN.md 5.1). In the created state a signal that
        would end a process makes the container exit with 128 + signal: the init is PID 1 of a
        new PID namespace and ignores default-action signals, so the gate is aborted and the
        init, waiting there, exits (containerd's CRI kills created containers)."""
        if self._exit.done() or self._pidfd is None:
            raise errdefs.NotFound(f"container {self.name}: process already finished")
        others = [p for p in cgroup.procs(self._cgroup) if p != self.pid] if all else []
        self._signal_init(signal)
        self._sigkilled = self._sigkilled or signal == 9  # SIGKILL; the module is shadowed
        if not self._started and signal not in _HARMLESS and self._created_kill is None:
            # After the signal: the aborted gate ends the waiting init at once.
            self._created_kill = signal
            self._abort_gate()
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal)

    async def checkpoint(self, images: Path, *, leave_running: bool) -> None:
        """[storage] Dump the container's processes into ``images`` with ``lxc-checkpoint``
        (runtime.backend.Checkpointable); without ``leave_running`` they end after the dump."""
        from runtime.lxc import checkpoint

        if self.attach is None:
            raise errdefs.NotImplementedErr("checkpoint: the LXC tools are not available")
        lxcpath, name, conf = self._criu_target(images, stop=not leave_running)
        await checkpoint.dump(self.attach.reaper, lxcpath, name, images,
                              stop=not leave_running, config_file=conf,
                              tool=self.attach.lxc_checkpoint)

    def _criu_target(self, images: Path, *, stop: bool) -> tuple[Path, str, Path]:
        """[storage] The (lxcpath, name) ``lxc-checkpoint`` dumps into ``images``, and the
        CRIU options file for it (the container's streams as external files, recorded next
        to the images); ``stop``: CRIU ends the processes after the dump, which then count
        as SIGKILLed (137, like runc's --exit)."""
        program = self.program_pid()
        modes = criu_stdio.modes_of(program, self.criu_stdio) if program else {}
        conf = criu_stdio.write_dump_files(images, self.criu_stdio, modes)
        if stop:
            self._sigkilled = True
        return Path(self._st.lxcpath), self._st.name, conf

    def program_pid(self) -> int:
        """The host PID of the program: the init's, which execve()d it."""
        return self.pid

    def _signal_init(self, sig: int) -> None:
        # Through a pidfd: the init is not our child, so its PID could be reused once
        # the monitor has reaped it; the pidfd always names the original process.
        assert self._pidfd is not None
        try:
            signal.pidfd_send_signal(self._pidfd, sig)
        except ProcessLookupError:
            raise errdefs.NotFound(
                f"container {self.name}: process already finished") from None

    def pids(self) -> list[int]:
        if self._exit.done():
            return []
        found = cgroup.procs(self._cgroup) or [self.pid]
        return [self.pid] + [p for p in found if p != self.pid]

    def close_stdin(self) -> None:
        """Close the container's stdin (for CloseIO)."""
        self._io.close_stdin()

    async def delete(self) -> None:
        if self._deleted:
            return
        if not self._exit.done():
            await self._stop()
        self.stop_oom_watch()
        await self._io.aclose()
        if self._gate is not None:
            self._gate.close()
        self._close_exec_fd()
        await self._after_exit()
        await self._stop_scope()
        cleanup.remove_files(self._st, self._state_dir)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._deleted = True

    async def update(self, resources: dict[str, Any]) -> None:
        """The cgroup files (ContainerOps.update), then, under systemd, the scope's
        properties (runc's systemd driver sets both), so systemd keeps the new limits."""
        await super().update(resources)
        if self._st.systemd_unit and self.attach is not None:
            await systemd_scope.set_properties(self.attach.reaper.run, self._st.systemd_unit,
                                               resources)

    async def _stop_scope(self) -> None:
        """runc's Destroy stops the unit. Usually systemd has already stopped it (a scope
        whose cgroup is empty stops by itself), so a failure is only logged."""
        if not self._st.systemd_unit or self.attach is None:
            return
        try:
            await systemd_scope.stop(self.attach.reaper.run, self._st.systemd_unit)
        except errdefs.Internal as e:
            log.warning("%s", e, extra={"container_id": self.name})

    async def _stop(self) -> None:
        with contextlib.suppress(errdefs.NotFound):
            self.kill(signal.SIGKILL, all=True)
        try:
            async with asyncio.timeout(10.0):
                await self.wait()
        except TimeoutError:
            if self._child is None:
                raise errdefs.DeadlineExceeded(
                    f"container {self.name}: its init did not end within 10 s of SIGKILL"
                ) from None
            self._child.send_signal(signal.SIGKILL)
            await self.wait()

    async def _after_exit(self) -> None:
        """Hook for what must end after the init before the files go (a restore's
        monitor, runtime.lxc.restore)."""
