"""``LxcBackend``: OCI containers as LXC containers run by ``lxc-execute`` (DESIGN.md 5.1).

One container = one ``lxc-execute -q -P <lxcpath> -n <name> -- <args…>`` child of the daemon,
spawned through the daemon's single :class:`~runtime.reaper.Reaper`:

- its config file is ``<lxcpath>/<name>/config``, rendered by :mod:`runtime.lxc.config`
  (argv goes on the command line: ``lxc.init.cmd`` does not honour quoting);
- ``-q`` keeps LXC's own messages off the container's stderr (they are in ``lxc.log``);
- its stdio *is* the container's stdio (``lxc.console.path = none``);
- the ``lxc.hook.start-host`` gate holds the init before the user's program runs, and reports
  the init's host PID (:mod:`runtime.lxc.gate`) → the OCI "created" state;
- its exit status is the program's (7 for ``exit 7``, 137 for SIGKILL; environment.md §2).

PID 1 in the container is LXC's small init, the program is PID 2 (``docker run --init``
behaviour): signals sent to the init's host PID are forwarded to the program. A program that
must be PID 1 itself (a system init) would need ``lxc-start``, whose status is always 0: not
supported by this backend.

Containers that may be checkpointed with CRIU (``CreateConfig.checkpointable``) run with
``lxc-start -F`` and this project's in-container init instead, which behaves the same and
records the exit status in a file (:mod:`runtime.lxc.owninit`); they are dumped by
``lxc-checkpoint`` (:mod:`runtime.lxc.checkpoint`), and a task restored from CRIU images
(``CreateConfig.restore``) is made by ``lxc-checkpoint -r`` (:mod:`runtime.lxc.restore`).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import cgroups_path, errdefs, store
from runtime.lxc import cgroup, cleanup, criu_stdio, owninit, resources, security, state
from runtime.lxc import config as lxcconf
from runtime.lxc.exec import AttachContext
from runtime.lxc.gate import Gate, hook_command
from runtime.lxc.mount import mount_all, unmount_all
from runtime.lxc.mountpoints import prepare as prepare_mount_points
from runtime.lxc.ops import ContainerOps
from runtime.lxc.rootfs import look_path
from runtime.reaper import Child, Reaper
from runtime.stdio import ProcessIO, TerminalIO, open_stdio
from runtime.types import CreateConfig, RestoreSource, Stdio

log = logging.getLogger(__name__)

#: containerd's identifier rule (identifiers.Validate), also safe as an LXC name and cgroup.
_ID = re.compile(r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$")
#: Signals whose default action does not end a process: sending one to a created container
#: just delivers it; any other signal makes the created container exit (see kill()).
_HARMLESS = frozenset({signal.SIGCHLD, signal.SIGCONT, signal.SIGURG, signal.SIGWINCH,
                       signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
#: The host PATH lxc-execute itself runs with; LXC does not pass it into the container.
#: The seccomp policy's file name in the LXC container dir (removed with it).
SECCOMP_FILE = "seccomp"
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


def _inherited_io(spec: dict[str, Any]) -> ProcessIO:
    """The caller's own stdin, stdout and stderr (the CLI's pass-through). With
    ``process.terminal`` and a pty on stdin (``create --console-socket`` put it there), that pty
    becomes lxc-execute's controlling terminal, which LXC needs to proxy the container's
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
    #: The LXC seccomp policy (written next to the config), or None.
    seccomp_text: str | None = None
    #: The in-container init's directory (runtime.lxc.owninit), or None for LXC's own init.
    init_dir: Path | None = None


class LxcBackend:
    """Creates containers with ``lxc-execute``; one instance per daemon."""

    name = "lxc"

    def __init__(self, reaper: Reaper, lxcpath: Path, *, log_level: str = "WARN",
                 gate_timeout: float = 30.0, hold_gate: bool = False,
                 inherit_stdio: bool = False) -> None:
        """``hold_gate`` and ``inherit_stdio`` are for the ``proxmox-lxcri`` CLI: the gate
        outlives the creating process (gate.sh --hold), and a container without stdio paths
        gets the caller's stdin, stdout and stderr (runc's pass-through) instead of
        /dev/null."""
        self._hold_gate = hold_gate
        self._inherit_stdio = inherit_stdio
        self._reaper = reaper
        self._lxcpath = lxcpath
        self._log_level = log_level
        self._gate_timeout = gate_timeout
        found = shutil.which("lxc-execute")
        if found is None:
            raise errdefs.Unavailable("lxc-execute: not found in PATH (install Debian's lxc)")
        self._lxc_execute = found
        self._lxc_attach = shutil.which("lxc-attach") or "lxc-attach"
        self._lxc_start = shutil.which("lxc-start") or "lxc-start"
        self._lxc_checkpoint = shutil.which("lxc-checkpoint") or "lxc-checkpoint"

    async def create(self, config: CreateConfig) -> LxcContainer:
        """Prepare the rootfs, write the LXC config, spawn lxc-execute and wait for the gate.
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
            if prepared.seccomp_text is not None:
                (lxc_dir / SECCOMP_FILE).write_text(prepared.seccomp_text)
            io = (_inherited_io(config.spec)
                  if self._inherit_stdio and config.stdio == Stdio()
                  else open_stdio(config.stdio, config.spec["process"].get("consoleSize")))
            undo.callback(io.close)
            if source is not None:
                from runtime.lxc import restore  # its container class extends this module's

                assert prepared.init_dir is not None
                handle: LxcContainer = await restore.restore(
                    self._reaper, self._lxc_checkpoint, st, config.state_dir,
                    source.images, prepared.init_dir, io, _HOST_ENV,
                    stdio_keys(io, config))
            else:
                gate = Gate(config.state_dir)
                undo.callback(gate.close)
                child = self._spawn(name, config.spec["process"]["args"], io,
                                    (config.spec["process"].get("user") or {}).get("umask"),
                                    own_init=prepared.init_dir is not None)
                keys = stdio_keys(io, config) if prepared.init_dir is not None else {}
                io.spawned()
                handle = await self._await_gate(config, st, gate, child, io, prepared.init_dir)
                handle.criu_stdio = keys
            handle.attach = self._attach_context(name, prepared.rootfs)
            undo.pop_all()
        return handle

    def _attach_context(self, name: str, rootfs: Path) -> AttachContext:
        return AttachContext(self._reaper, self._lxc_attach, self._lxcpath, name, rootfs,
                             inherit_stdio=self._inherit_stdio,
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
                                             Path(st.bundle) / "rootfs")
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
        look_path(rootfs, process["args"][0], process.get("env", []), process.get("cwd", "/"))
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
        init_dir = None
        if config.checkpointable or source is not None:
            init_dir = owninit.prepare(config.state_dir, process["args"], config.stdio)
            undo.callback(shutil.rmtree, init_dir, True)
        # Mount points are made here, inside the rootfs, never by LXC through image symlinks.
        plan = prepare_mount_points(config.spec, rootfs, lxcconf.PROVIDED_BY_LXC)
        apparmor, selinux = _host_lsm()
        params = lxcconf.Params(
            name=name, rootfs=str(rootfs), mount_plan=plan,
            # A CRIU restore has no gate: its processes are past that point.
            gate=("" if source is not None
                  else hook_command(config.state_dir, hold=self._hold_gate)),
            own_init_dir=str(init_dir) if init_dir is not None else "",
            path_kind=_host_path_kind if init_dir is not None else None,
            default_apparmor=apparmor_default,
            log_file=str(config.state_dir / cleanup.LXC_LOG), log_level=self._log_level,
            default_hostname=config.id, shim_pid=os.getpid(), source_is_dir=os.path.isdir,
            cgroup=resources.detect(), seccomp_path=str(self._lxcpath / name / SECCOMP_FILE),
            rootfs_mount=self._rootfs_mount(), own_cgroup=own_cgroup,
            apparmor=apparmor, selinux=selinux)
        notes: list[str] = []
        text = lxcconf.render(lxcconf.lxc_config(config.spec, params, notes))
        policy = lxcconf.seccomp_policy(config.spec, notes)
        for note in notes:  # DESIGN.md section 8: a downgrade is logged, never silent
            log.warning("downgraded: %s", note, extra={"container_id": config.id})
        return _Prepared(name, rootfs, text, policy, init_dir)

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

    def _spawn(self, name: str, args: list[str], io: ProcessIO,
               umask: int | None = None, *, own_init: bool = False) -> Child:
        if own_init:
            # -F: in the foreground, as this child, with its stdio as the container's; the
            # program's argv is in the init's directory (runtime.lxc.owninit).
            argv = [self._lxc_start, "-F", "-P", str(self._lxcpath), "-n", name]
        else:
            argv = [self._lxc_execute, "-q", "-P", str(self._lxcpath), "-n", name, "--", *args]
        # Its own session: a signal to the daemon's process group never reaches the container.
        return self._reaper.spawn(argv, stdin=io.stdin, stdout=io.stdout, stderr=io.stderr,
                                  env=_HOST_ENV, cwd="/", new_session=True,
                                  controlling_tty=io.ctty, umask=umask)

    async def _await_gate(self, config: CreateConfig, st: state.PersistedState, gate: Gate,
                          child: Child, io: ProcessIO,
                          init_dir: Path | None = None) -> LxcContainer:
        """The init's PID from the gate, racing lxc-execute's early exit and a timeout."""
        log_file = config.state_dir / cleanup.LXC_LOG
        try:
            st.monitor_pid, st.monitor_start_time = child.pid, state.start_time(child.pid)
            state.save(config.state_dir, st)  # `delete` can stop a monitor held in the gate
            pid = await self._race_gate(gate, child, log_file)
            st.pid, st.pid_start_time = pid, state.start_time(pid)
            state.save(config.state_dir, st)
            return LxcContainer(st, config.state_dir, gate, child, io, init_dir)
        except BaseException:
            await _stop_spawn(gate, child)
            await io.aclose()
            raise

    async def _race_gate(self, gate: Gate, child: Child, log_file: Path) -> int:
        pid_task = asyncio.ensure_future(gate.pid())
        exit_task = asyncio.ensure_future(child.wait())
        try:
            done, _ = await asyncio.wait({pid_task, exit_task}, timeout=self._gate_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            pid_task.cancel()
            exit_task.cancel()
        if pid_task in done:
            return pid_task.result()
        if exit_task in done:
            details = lxc_log_errors(log_file) or "no ERROR lines in the LXC log"
            raise errdefs.Internal(f"lxc-execute exited with status {exit_task.result()} "
                                   f"before the container was created: {details}")
        raise errdefs.DeadlineExceeded(
            f"the start-host gate did not report within {self._gate_timeout:g}s")


async def _stop_spawn(gate: Gate, child: Child) -> None:
    """Undo a spawn whose gate never reported: abort the gate (buffered even if the hook has
    not opened its FIFO yet), give LXC a moment to abort on its own, then SIGKILL."""
    gate.abort()
    try:
        async with asyncio.timeout(5.0):
            await child.wait()
    except TimeoutError:
        child.send_signal(signal.SIGKILL)
        await child.wait()


class LxcContainer(ContainerOps):
    """A created container: init held by the gate until :meth:`start`."""

    def __init__(self, st: state.PersistedState, state_dir: Path, gate: Gate | None,
                 child: Child | None, io: ProcessIO, init_dir: Path | None = None) -> None:
        self._st = st
        self._state_dir = state_dir
        self._gate = gate
        self._child = child
        self._io = io
        #: The in-container init's directory, where it records the program's exit status.
        self._init_dir = init_dir
        #: [storage] CRIU's keys of the streams that lead outside (runtime.lxc.criu_stdio).
        self.criu_stdio: dict[int, str] = {}
        self._pidfd: int | None = os.pidfd_open(st.pid)
        self._cgroup = cgroup.cgroup_dir(st.pid, st.name, st.cgroup)
        self._started = False
        self._deleted = False
        self._created_kill: int | None = None
        self._sigkilled = False
        self._exit = asyncio.get_running_loop().create_task(self._watch())

    @property
    def pid(self) -> int:
        return self._st.pid

    @property
    def monitor_pid(self) -> int:
        """lxc-execute (or lxc-start), which exits with the program's status."""
        return self._st.monitor_pid

    @property
    def name(self) -> str:
        """The LXC container name (``lxc-ls -P <lxcpath>`` shows it while it runs)."""
        return self._st.name

    async def _wait_init(self) -> int:
        """The monitor's exit status (lxc-execute's is the program's)."""
        assert self._child is not None
        return await self._child.wait()

    async def _watch(self) -> int:
        rc = await self._wait_init()
        await self._oom_settled()  # an OOM kill is reported before the exit, as by runc
        status = rc
        recorded = owninit.exit_status(self._init_dir) if self._init_dir else None
        if self._created_kill is not None:
            status = 128 + self._created_kill
        elif recorded is not None:
            status = recorded
        elif self._init_dir is not None or (self._sigkilled and rc == 1):
            # lxc-execute reports 1 (its own failure code, measured) when its init is killed,
            # since the init cannot report the signal; the program died of our SIGKILL. The
            # in-container init records a status unless it is killed itself, which only
            # SIGKILL does (it waits for every other signal); lxc-start would say 0.
            status = 128 + signal.SIGKILL
        self._st.exit_status = status
        if self._gate is not None:
            self._gate.close()
        with contextlib.suppress(OSError):
            # Not if `delete` (cleanup.cleanup) already removed it: that would resurrect it.
            state.save(self._state_dir, self._st, only_if_present=True)
        return status

    async def start(self) -> None:
        if self._exit.done():
            raise errdefs.FailedPrecondition(f"container {self.name} has already exited")
        if self._started:
            raise errdefs.FailedPrecondition(f"container {self.name} is already started")
        self._started = True
        self._release_gate()

    def _release_gate(self) -> None:
        if self._gate is not None:
            self._gate.release()

    def _abort_gate(self) -> None:
        if self._gate is not None:
            self._gate.abort()

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def kill(self, signal: int, all: bool = False) -> None:
        """Signal the init from the host (DESIGN.md 5.1). In the created state a signal that
        would end a process makes the container exit with 128 + signal: the init is PID 1 of a
        new PID namespace and ignores default-action signals, so the gate is aborted and LXC
        SIGKILLs it (containerd's CRI kills created containers)."""
        if self._exit.done() or self._pidfd is None:
            raise errdefs.NotFound(f"container {self.name}: process already finished")
        others = [p for p in cgroup.procs(self._cgroup) if p != self.pid] if all else []
        self._signal_init(signal)
        self._sigkilled = self._sigkilled or signal == 9  # SIGKILL; the module is shadowed
        if not self._started and signal not in _HARMLESS and self._created_kill is None:
            # After the signal: the aborted gate makes LXC kill the init at once.
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
        if self._init_dir is None:
            raise errdefs.FailedPrecondition(
                f"container {self.name} runs LXC's in-process init, whose executable lies "
                "outside the container, so CRIU cannot dump it; containers get the "
                "in-container init when they are created where `criu check` passes and "
                "[storage] criu is not \"never\"")
        program = self.program_pid()
        modes = criu_stdio.modes_of(program, self.criu_stdio) if program else {}
        conf = criu_stdio.write_dump_files(images, self.criu_stdio, modes)
        if stop:
            self._sigkilled = True
        return Path(self._st.lxcpath), self._st.name, conf

    def program_pid(self) -> int:
        """The host PID of the program (the init's first child), 0 if there is none."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            return 0
        return int(children[0]) if children else 0

    def _signal_init(self, sig: int) -> None:
        # Through a pidfd: the init is not our child, so its PID could be reused once
        # lxc-execute has reaped it; the pidfd always names the original process.
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
        await self._after_exit()
        cleanup.remove_files(self._st, self._state_dir)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._deleted = True

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
