"""``ProxmoxBackend``: each container a Proxmox CT, made and run through the Proxmox API.

Create (the OCI "created" state, init held, its real host PID known):

1. the image's template CT (runtime.proxmox.rootfs), made once per node;
2. a VMID (runtime.proxmox.vmid) and ``POST /lxc/{template}/clone`` (a linked clone);
3. ``PUT /lxc/{vmid}/config`` with the options from the spec (runtime.proxmox.ctconfig),
   ``entrypoint`` the project's init, then the raw mount keys into the config file
   (runtime.proxmox.conffile, runtime.proxmox.initdir);
4. ``POST /lxc/{vmid}/status/start``: the CT runs, its PID 1 (the init) waits at the gate;
   ``GET …/status/current`` gives the init's host PID (its undeclared ``pid``).

Start writes ``go`` to the gate. The exit is watched through a pidfd of the init (not our
child), its status read from the init's status file; PVE's CT stops by itself when its init
exits. Signals, exec (``lxc-attach -P <lxcpath> -n <vmid>``), stats and pause work on the node,
as for the LXC backend (runtime.lxc.ops). Delete stops the CT and destroys it with its volume
through the API. A failed create destroys what it made (CT, volume, so the VMID is free again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import signal
from pathlib import Path
from typing import Any

from runtime import cgroups, errdefs, store
from runtime import config as runtime_config
from runtime.lxc import state as lxcstate
from runtime.lxc.backend import rootfs_from_spec
from runtime.lxc.exec import AttachContext
from runtime.lxc.ops import ContainerOps
from runtime.oplog import OpLog
from runtime.proxmox import address, conffile, ctconfig, initdir, rootfs, settings
from runtime.proxmox import state as pvestate
from runtime.proxmox import vmid as vmids
from runtime.proxmox.api import PveApi
from runtime.reaper import Reaper
from runtime.stdio import ProcessIO, TerminalIO
from runtime.stdio import open_stdio as _open_stdio
from runtime.types import CreateConfig

log = logging.getLogger(__name__)
_HARMLESS = frozenset({signal.SIGCHLD, signal.SIGCONT, signal.SIGURG, signal.SIGWINCH,
                       signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
#: The checkpoint record in a Task API checkpoint directory (the ZFS storage's name).
RECORD = "proxmox-lxcri-checkpoint.json"
#: PVE's default idmap for unprivileged CTs (proxmox-api.md §6.1).
UNPRIVILEGED_BASE = 100000


#: The Task API's checkpoint directory in CreateConfig.options (shim/task_service.py).
CHECKPOINT_OPTION = "lxcri.checkpoint_path"


def from_checkpoint_refusal(directory: Path) -> str:
    """Why a task cannot be created from a checkpoint on this backend (CreateTaskRequest
    .checkpoint, ``ctr containers restore``), naming the checkpoint's CT and snapshot.

    The ZFS storage makes such a task's root a ZFS clone of the snapshot, O(1). Proxmox has
    no O(1) way: a linked clone needs a template's base volume (pve-storage
    ``ZFSPoolPlugin.pm`` → ``volume_has_feature``: ``clone => { base => 1 }``; pve-container
    ``API2/LXC.pm`` → ``clone_vm``: ``Linked clone feature for '<volid>' is not available``),
    a CT with snapshots cannot become a template (``API2/LXC.pm`` → ``template``: ``unable to
    create template, because CT contains snapshots``), and a clone from ``snapname`` is a full
    one, a copy of every file (``clone_vm`` → ``PVE::LXC::copy_volume``: O(size))."""
    where = ""
    try:
        record = json.loads((directory / RECORD).read_text())
        vmid, snap = int(record["vmid"]), str(record["snapshot"])
        if vmid > 0 and snap.startswith("checkpoint-") and snap.isprintable():
            where = f" (checkpoint {snap} of CT {vmid})"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return (f"a task from a checkpoint{where}: the Proxmox backend cannot create one at O(1) "
            "cost: Proxmox clones a CT from a snapshot only as a full copy (a linked clone "
            "needs a template, and a CT with snapshots cannot become one); roll the CT back "
            "instead with `proxmox-lxcri restore ID` after its task stopped (docs/proxmox.md)")


def rootfs_mount() -> str:
    """LXC's compiled-in ``lxc.rootfs.mount`` (Debian and Proxmox: the multiarch path), named
    again in the CT's config because the read-only paths' bind sources go through it (as the
    LXC backend does, runtime/lxc/backend.py ``_rootfs_mount``)."""
    for candidate in ("/usr/lib/x86_64-linux-gnu/lxc/rootfs", "/usr/lib/lxc/rootfs"):
        if os.path.isdir(candidate):
            return candidate
    return "/usr/lib/x86_64-linux-gnu/lxc/rootfs"


def process_security(spec: dict[str, Any],
                     container_id: str) -> tuple[str, bytes | None, list[tuple[str, str]]]:
    """The spec's own security settings inside the CT, the LXC backend's way and code:

    - the in-CT init's ``process`` directives and compiled seccomp filter (user, groups, cwd,
      rlimits, the five capability sets, no_new_privs, seccomp: runtime/lxc/security.py,
      runtime/lxc/seccomp.py), applied by lxcri-init.c right before the program's execve;
    - masked and read-only paths as ``lxc.mount.entry`` lines (runtime/lxc/setup_hooks.py
      ``path_entries``), which LXC applies after Proxmox's ``lxc.mount.auto``, with
      ``lxc.rootfs.mount`` for the read-only binds' source."""
    from runtime.lxc import config as lxcconf
    from runtime.lxc import seccomp, security, setup_hooks

    notes: list[str] = []
    policy = lxcconf.seccomp_policy(spec, notes)
    directives = security.process_directives(
        spec["process"], notes, seccomp_flags=policy.flags if policy is not None else None)
    bpf = seccomp.compile_bpf(policy) if policy is not None else None
    mount = rootfs_mount()
    paths = setup_hooks.path_entries(spec, mount, ro_in_hook=False)
    raw = ([("lxc.rootfs.mount", mount)] if paths else []) + paths
    linux = spec.get("linux") or {}
    if linux.get("cgroupsPath"):
        # Every ctr and CRI spec has one: info, not a warning per container.
        log.info("linux.cgroupsPath ignored: the CT's cgroup is Proxmox's (lxc/<vmid>)",
                 extra={"container_id": container_id})
    if (spec.get("process") or {}).get("apparmorProfile"):
        notes.append("process.apparmorProfile: the CT runs under Proxmox's AppArmor profile")
    if linux.get("devices"):
        notes.append("linux.devices: not created in a Proxmox CT (its /dev is Proxmox's)")
    for note in notes:  # DESIGN.md section 8: a downgrade is logged, never silent
        log.warning("downgraded: %s", note, extra={"container_id": container_id})
    return directives, bpf, raw


def open_terminal_io(stdio: Any, console_size: object) -> TerminalIO:
    """The pty for ``process.terminal`` (runtime.stdio: the shim copies between its master
    and containerd's FIFOs, as for the LXC backend)."""
    io = _open_stdio(stdio, console_size)
    assert isinstance(io, TerminalIO)
    return io


async def _status(api: PveApi, vmid: int) -> str | None:
    """``running``/``stopped``, or None when the CT does not exist."""
    try:
        cur = await api.call("GET", "/nodes/{node}/lxc/{vmid}/status/current", vmid=vmid,
                             read=True)
    except errdefs.NotFound:
        return None
    return str((cur or {}).get("status", "")) if isinstance(cur, dict) else ""


async def destroy(api: PveApi, vmid: int, *, settle: float = 0.0) -> None:
    """Stop (if running) and destroy a CT with its volumes; a CT already gone is fine.
    ``settle``: seconds to let a CT whose init has exited stop by itself first (its
    ``lxc-start`` ends with the init; a stop meanwhile races it and fails in ``lxc-stop``)."""
    status = await _status(api, vmid)
    deadline = asyncio.get_running_loop().time() + settle
    while status == "running" and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        status = await _status(api, vmid)
    if status is None:
        return
    if status == "running":
        try:
            await api.run("POST", "/nodes/{node}/lxc/{vmid}/status/stop", vmid=vmid,
                          what="stop")
        except errdefs.ErrdefsError:
            if await _status(api, vmid) == "running":  # not the race with its own exit
                raise
    for attempt in range(4):
        try:
            await api.run("DELETE", "/nodes/{node}/lxc/{vmid}", vmid=vmid, what="destroy",
                          params={"purge": True, "destroy-unreferenced-disks": True})
            return
        except errdefs.NotFound:
            return
        except errdefs.Internal as exc:
            # A volume still busy right after the CT stopped (ZFS "dataset is busy"): the
            # failed destroy task keeps the CT and its config, so trying again is safe.
            if "busy" not in str(exc) or attempt == 3:
                raise
            await asyncio.sleep(2.0 * (attempt + 1))


class ProxmoxBackend:
    name = "proxmox"

    def __init__(self, reaper: Reaper, root: Path) -> None:
        self._reaper = reaper
        self._root = root
        self._oplog = OpLog(root / "runtime" / "events.log", source="proxmox")
        self._apis: dict[settings.ProxmoxSettings, PveApi] = {}
        self._lxc_attach = shutil.which("lxc-attach") or "lxc-attach"

    async def aclose(self) -> None:
        """Close the API sessions (the shim daemon's shutdown)."""
        for api in self._apis.values():
            await api.close()
        self._apis.clear()

    def api(self, s: settings.ProxmoxSettings) -> PveApi:
        api = self._apis.get(s)
        if api is None:
            api = self._apis[s] = PveApi(s, self._oplog)
        return api

    async def create(self, config: CreateConfig) -> PveContainer:
        if config.options.get(CHECKPOINT_OPTION):
            raise errdefs.NotImplementedErr(from_checkpoint_refusal(
                Path(str(config.options[CHECKPOINT_OPTION]))))
        s = settings.parse(config.settings)
        api = self.api(s)
        overrides = runtime_config.overrides(config.settings,
                                             config.spec.get("annotations") or {})
        lease = address.allocate(config.settings, overrides, self._root / "network",
                                 config.namespace, config.id)
        try:
            return await self._create(config, s, api, overrides, lease)
        except BaseException:
            if lease is not None:
                address.release(lease.pool, lease.state_dir, lease.owner)
            raise

    async def _create(self, config: CreateConfig, s: settings.ProxmoxSettings, api: PveApi,
                      overrides: dict[str, str], lease: address.Lease | None) -> PveContainer:
        spec = config.spec
        process = spec["process"]
        opts = ctconfig.build(spec, namespace=config.namespace, container_id=config.id,
                              overrides=overrides, default_bridge=s.bridge, tags=s.tags,
                              entrypoint=initdir.ENTRYPOINT, lease=lease)
        user = process.get("user") or {}
        shift = UNPRIVILEGED_BASE if opts.unprivileged else 0
        rootfs_dir = config.bundle / "rootfs" if config.rootfs else rootfs_from_spec(config)
        if not config.rootfs and not rootfs_dir.is_dir():
            raise errdefs.NotFound(f"root.path: rootfs {rootfs_dir} does not exist")
        # 0700, 0711 for an unprivileged CT: its mapped root, which makes LXC's mount of the
        # init directory, must pass through (as the LXC backend does with a user namespace).
        store.private_dir(config.state_dir, traverse=opts.unprivileged)
        term = (open_terminal_io(config.stdio, process.get("consoleSize"))
                if config.stdio.terminal else None)
        try:
            directives, bpf, security_raw = process_security(spec, config.id)
            init_dir, raw = initdir.prepare(
                config.state_dir, list(process["args"]), config.stdio,
                host_uid=shift + int(user.get("uid", 0)),
                host_gid=shift + int(user.get("gid", 0)),
                tty=os.ttyname(term.stdin) if term is not None and term.stdin is not None
                else None, directives=directives, seccomp=bpf)
            raw += security_raw
        except BaseException:
            if term is not None:
                term.close()
            raise
        vmid: int | None = None
        made: list[int] = []
        gate: int | None = None
        stdin: tuple[int, int] | None = None
        try:
            if config.stdio.stdin and term is None:
                stdin = initdir.open_stdin(init_dir, config.stdio.stdin)
            st = pvestate.PveState(vmid=0, url=s.url, node=s.node, token_id=s.token_id,
                                   token_secret_file=str(s.token_secret_file),
                                   ca_file=s.ca_file, conf_dir=str(s.conf_dir),
                                   request_timeout=s.request_timeout,
                                   lease_pool=lease.pool if lease else "",
                                   lease_dir=lease.state_dir if lease else "",
                                   lease_owner=lease.owner if lease else "")
            async with rootfs.template_for(api, self._reaper, config, rootfs_dir,
                                           opts.unprivileged) as template:
                async def clone(new: int) -> None:
                    params = {"newid": new, "hostname": opts.options["hostname"],
                              "description": opts.options["description"]}
                    upid = await clone_when_unlocked(api, template, params)
                    made.append(new)  # the id is ours from here: undo removes it
                    await api.wait_task(upid, vmid=new, what=f"linked clone of CT {template}")

                vmid, _ = await vmids.with_new_vmid(api, clone)
            st.vmid = vmid
            pvestate.save(config.state_dir, st)  # the `delete` action can remove it from now
            await api.call("PUT", "/nodes/{node}/lxc/{vmid}/config", vmid=vmid,
                           params=opts.options)
            conffile.add_raw(s.conf_dir, vmid, raw + opts.raw)
            gate = initdir.open_gate(init_dir)
            await api.run("POST", "/nodes/{node}/lxc/{vmid}/status/start", vmid=vmid,
                          what="start")
            cur = await api.call("GET", "/nodes/{node}/lxc/{vmid}/status/current", vmid=vmid,
                                 read=True)
            pid = int((cur or {}).get("pid") or 0)
            if (cur or {}).get("status") != "running" or pid <= 0:
                raise errdefs.Internal(f"CT {vmid}: started, but status/current says "
                                       f"{(cur or {}).get('status')!r} with pid {pid}")
            st.pid, st.pid_start_time = pid, lxcstate.start_time(pid)
            pvestate.save(config.state_dir, st)
            handle = PveContainer(self, api, s, st, config.state_dir, init_dir, gate, stdin,
                                  term)
            gate = stdin = term = None
            return handle
        except BaseException:
            if term is not None:
                term.close()
            if gate is not None:
                os.close(gate)
            for fd in stdin or ():
                os.close(fd)
            for ct in made if vmid is None else [vmid]:
                # Shielded: a cancelled create still removes its CT (also one whose clone
                # task was still running, or failed after taking the id).
                await asyncio.shield(_undo(api, ct))
            pvestate.remove(config.state_dir)
            shutil.rmtree(init_dir, ignore_errors=True)
            raise


async def clone_when_unlocked(api: PveApi, template: int, params: dict[str, Any]) -> str:
    """``POST …/clone``, again while the template is ``locked (disk)``: pve-container
    (``API2/LXC.pm`` → ``clone_vm``) locks the source of every clone, linked ones too, until
    the clone's worker ends, so concurrent clones of one image take turns. The refusal is a
    pre-check: nothing was made, so trying again is safe."""
    deadline = asyncio.get_running_loop().time() + api.settings.task_timeout
    while True:
        try:
            upid: str = await api.call("POST", "/nodes/{node}/lxc/{vmid}/clone", vmid=template,
                                       params=params)
            return upid
        except errdefs.FailedPrecondition as exc:
            if "is locked (disk)" not in str(exc) or \
                    asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(random.uniform(0.02, 0.2))


async def _undo(api: PveApi, vmid: int) -> None:
    try:
        await destroy(api, vmid)
    except errdefs.ErrdefsError as exc:
        log.error("CT %d: removing it after a failed create failed: %s", vmid, exc)


class PveContainer(ContainerOps):
    """A created CT: its init held at the gate until :meth:`start`."""

    def __init__(self, backend: ProxmoxBackend, api: PveApi, s: settings.ProxmoxSettings,
                 st: pvestate.PveState, state_dir: Path, init_dir: Path, gate: int,
                 stdin: tuple[int, int] | None = None,
                 term: TerminalIO | None = None) -> None:
        self._api = api
        self._settings = s
        self._pve = st
        self._state_dir = state_dir
        self._init_dir = init_dir
        self._gate: int | None = gate
        self._st = lxcstate.PersistedState(name=str(st.vmid), lxcpath=str(s.lxcpath),
                                           bundle="", pid=st.pid)
        self._io: ProcessIO = ProcessIO()
        #: Our copy of the pty's slave: held until the init exits, so that the master does
        #: not read EIO (no slave holder) before the program in the CT has opened it.
        self._tty_slave: int | None = None
        if term is not None:
            self._tty_slave = term.stdin
            term._child_fds = [fd for fd in term._child_fds if fd != term.stdin]
            self._io = term
            term.spawned()
        elif stdin is not None:
            # Fed by ProcessIO's copy (containerd's FIFO → the CT's fd0), closed on EOF,
            # CloseIO or delete.
            self._io._stdin_src, self._io._stdin_sink = stdin
            self._io.spawned()
        # Execs run through the in-CT init too (its own user, groups, capabilities and the
        # CT's seccomp filter), as for the LXC backend (runtime/lxc/exec.py).
        self.attach = AttachContext(backend._reaper, backend._lxc_attach, s.lxcpath,
                                    str(st.vmid), s.lxcpath / str(st.vmid) / "rootfs",
                                    init_dir=init_dir)
        self._pidfd: int | None = os.pidfd_open(st.pid)
        self._started = False
        self._deleted = False
        self._created_kill: int | None = None
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[None] = loop.create_future()
        loop.add_reader(self._pidfd, self._on_exit)
        self._exit = loop.create_task(self._watch())

    @property
    def pid(self) -> int:
        return self._pve.pid

    @property
    def vmid(self) -> int:
        return self._pve.vmid

    def _on_exit(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
        if not self._exited.done():
            self._exited.set_result(None)

    async def _watch(self) -> int:
        await self._exited
        # An OOM kill is reported before the exit, as by runc and the LXC backend: the pidfd
        # fires at the death, which can be before the watcher has read the kill's counter.
        await self._oom_settled()
        if self._tty_slave is not None:
            os.close(self._tty_slave)  # the master reads EIO once the program's copies close
            self._tty_slave = None
        if self._created_kill is not None:
            return 128 + self._created_kill
        recorded = initdir.exit_status(self._init_dir)
        # No status: the init itself was SIGKILLed (it waits for every other signal).
        return recorded if recorded is not None else 128 + signal.SIGKILL

    def _live_cgroups(self) -> cgroups.Cgroups:
        cg = cgroups.of_pid(self.pid)
        want = ("lxc", str(self.vmid))
        for p in [*cg.v1.values(), *([cg.v2] if cg.v2 else [])]:
            parts = p.parts
            if any(parts[i:i + 2] == want for i in range(len(parts) - 1)):
                return cg
        raise errdefs.NotFound(f"CT {self.vmid}: no cgroup (not running)")

    async def start(self) -> None:
        if self._exit.done():
            raise errdefs.FailedPrecondition(f"CT {self.vmid} has already exited")
        if self._started:
            raise errdefs.FailedPrecondition(f"CT {self.vmid} is already started")
        self._started = True
        self._write_gate(b"go\n")

    def _write_gate(self, word: bytes) -> None:
        if self._gate is not None:
            with contextlib.suppress(OSError):
                os.write(self._gate, word)
            os.close(self._gate)
            self._gate = None

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def kill(self, signal: int, all: bool = False) -> None:
        if self._exit.done() or self._exited.done() or self._pidfd is None:
            raise errdefs.NotFound(f"CT {self.vmid}: process already finished")
        others = ([p for p in cgroups.read_pids(self._live_cgroups()) if p != self.pid]
                  if all else [])
        if not self._started and signal not in _HARMLESS:
            # Held at the gate, PID 1 of its PID namespace ignores default-action signals:
            # the aborted gate ends it, and the status says which signal did.
            if self._created_kill is None:
                self._created_kill = signal
            self._write_gate(b"abort\n")
        else:
            try:
                import signal as sigmod
                sigmod.pidfd_send_signal(self._pidfd, signal)
            except ProcessLookupError:
                raise errdefs.NotFound(f"CT {self.vmid}: process already finished") from None
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal)

    def pids(self) -> list[int]:
        if self._exited.done():
            return []
        try:
            found = cgroups.read_pids(self._live_cgroups())
        except errdefs.NotFound:
            found = []
        return [self.pid] + [p for p in found if p != self.pid]

    def close_stdin(self) -> None:
        self._io.close_stdin()

    async def delete(self) -> None:
        if self._deleted:
            return
        self.stop_oom_watch()
        self._write_gate(b"abort\n")
        await destroy(self._api, self.vmid, settle=10.0 if self._exited.done() else 0.0)
        if not self._exited.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await asyncio.shield(self._exited)
        if self._pidfd is not None:
            if not self._exited.done():
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        await self._io.aclose()  # after the CT: a terminal's output drains to EIO
        if self._pve.lease_pool:
            address.release(self._pve.lease_pool, self._pve.lease_dir, self._pve.lease_owner)
        shutil.rmtree(self._init_dir, ignore_errors=True)
        pvestate.remove(self._state_dir)
        self._deleted = True

    async def checkpoint_filesystem(self, directory: Path) -> str:
        """``ctr task checkpoint``: a CT snapshot ``checkpoint-<unix>`` with the retention
        (runtime.proxmox.checkpoints), recorded in ``directory``."""
        from runtime.proxmox import checkpoints

        name = await checkpoints.take(self._api, self.vmid, keep=self._settings.checkpoint_keep)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / RECORD).write_text(json.dumps(
            {"backend": "proxmox", "node": self._settings.node, "vmid": self.vmid,
             "snapshot": name}, sort_keys=True))
        return name

    def stats(self) -> cgroups.Stats:
        return cgroups.read_stats(self._live_cgroups())

    async def update(self, resources: dict[str, Any]) -> None:
        """Update: the CT's cgroup at once (as the LXC backend does, runtime/lxc/ops.py),
        then its Proxmox config (``PUT …/config``: memory, swap, cpulimit, cores, cpuunits),
        so that the UI and the next start agree with what runs."""
        await super().update(resources)
        options = ctconfig.resources({"linux": {"resources": resources}})
        if options:
            await self._api.call("PUT", "/nodes/{node}/lxc/{vmid}/config", vmid=self.vmid,
                                 params=options)
