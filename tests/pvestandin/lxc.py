"""Running a CT on real LXC, the way pve-container does.

The LXC config is generated from the CT config at every start, as pve-container
``src/PVE/LXC.pm`` ``update_lxc_config`` does, into ``<lxcpath>/<vmid>/config``:

* ``lxc.cgroup.relative = 0``, ``lxc.cgroup.dir.monitor = lxc.monitor/<vmid>``,
  ``lxc.cgroup.dir.container = lxc/<vmid>``, ``lxc.cgroup.dir.container.inner = ns``;
* ``lxc.arch``; ``lxc.include = /usr/share/lxc/config/<ostype>.common.conf``, falling back to
  ``common.conf`` when that file is missing (it is on a plain Debian host), plus
  ``<ostype>.userns.conf``/``userns.conf`` for unprivileged CTs;
* ``lxc.mount.auto = sys:mixed`` for unprivileged CTs without ``force_rw_sys``;
* ``lxc.monitor.unshare = 1``; ``lxc.idmap = u|g 0 100000 65536`` for unprivileged CTs;
* ``lxc.console.path = none`` (and ``devices.deny c 5:1``) when ``console: 0``; the default is
  ``console: 1``, where LXC allocates a console pty; ``lxc.tty.max`` = ``tty`` (default 2);
* ``lxc.environment = TERM=linux``; ``lxc.uts.name`` = hostname or ``CT<vmid>``;
* memory: on a cgroup-v1 memory controller ``lxc.cgroup.memory.limit_in_bytes`` and
  ``memsw.limit_in_bytes``, else ``lxc.cgroup2.memory.max/high/swap.max``; cpu likewise
  (``cfs_quota_us``/``shares`` or ``cpu.max``/``cpu.weight``);
* ``lxc.rootfs.path = /var/lib/lxc/<vmid>/rootfs`` (mounted there by the prestart hook);
* per ``net<n>``: ``type = veth``, ``veth.pair = veth<vmid>i<n>``, ``hwaddr``, ``name``, ``mtu``
  (and PVE's ``script.up = lxcnetaddbr``, which plugs the veth into the bridge);
* ``lxc.init.cmd`` from ``entrypoint`` and ``lxc.environment.runtime`` from ``env`` (PVE 9.1+);
* the raw ``lxc.*`` keys of the CT config, appended.

Deviations, all because this host is not a PVE node (each noted where it is done):
the lxcpath is the stand-in's own (``lxc-start -P``), so nothing clashes with other LXC users;
there is no ``lxcnetaddbr``, so ``lxc.net.<n>.link`` names the (mapped) bridge and LXC plugs the
veth itself; ``memsw`` is only written when the kernel has swap accounting; seccomp/apparmor
profiles are left to ``common.conf`` (no AppArmor here); ``lxc.autodev = 1`` is written because
Debian's ``common.conf`` sets ``lxc.tty.dir = lxc`` which needs it (PVE's ``lxc-pve`` config
sets up /dev through ``lxc-pve-autodev-hook``).

Start (pve-container ``src/pve-container@.service`` + ``PVE::LXC::vm_start``): ``lxc-start -F
-n <vmid>`` is the main process, stdout to /dev/null, stderr to ``/run/pve/ct-<vmid>.stderr``
(here ``<run>/ct-<vmid>.stderr``); nothing else of its exit is used, so no init exit status
reaches the API, as on a real node.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import platform
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.pvestandin.tasks import TaskFailed

LXC_CONFIG_DIR = Path("/usr/share/lxc/config")
CGROUP_V1 = Path("/sys/fs/cgroup")


def host_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "i386"}.get(platform.machine(),
                                                                      "amd64")


def _v1(controller: str) -> Path | None:
    p = CGROUP_V1 / controller
    return p if (p / "cgroup.procs").exists() and not (CGROUP_V1 / "cgroup.controllers").exists() \
        else None


@functools.cache
def lxc_supports_key(key: str) -> bool:
    """Whether this LXC parses config key ``key``: a probe container whose config holds only
    that key is loaded by ``lxc-info`` (an unknown key fails the load, "Unsupported config
    key"). The version does not tell: ``lxc.environment.runtime`` came with lxc/lxc#4582
    (September 2025, for Proxmox VE), after 6.0.4, so Debian 13's LXC 6.0.4 lacks it while
    PVE 9's lxc-pve has it."""
    with tempfile.TemporaryDirectory(prefix="lxc-key-probe-") as d:
        (Path(d) / "probe").mkdir()
        (Path(d) / "probe" / "config").write_text(f"{key} = PROBE=1\n")
        try:
            return subprocess.run(["lxc-info", "-P", d, "-n", "probe"], capture_output=True,
                                  timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False


def parse_prop(text: str, default_key: str) -> dict[str, str]:
    """A property string's keys (after validation, so no error handling)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
        elif part:
            out[default_key] = part
    return out


def lxc_config(vmid: int, conf: dict[str, str], lxc_raw: list[tuple[str, str]],
               lxcpath: Path, bridges: dict[str, str]) -> str:
    """The generated ``<lxcpath>/<vmid>/config`` text for ``conf``."""
    lines: list[str] = [
        "lxc.cgroup.relative = 0",
        f"lxc.cgroup.dir.monitor = lxc.monitor/{vmid}",
        f"lxc.cgroup.dir.container = lxc/{vmid}",
        "lxc.cgroup.dir.container.inner = ns",
        f"lxc.arch = {conf.get('arch', 'amd64')}",
    ]
    custom_idmap = any(k == "lxc.idmap" for k, _ in lxc_raw)
    unpriv = conf.get("unprivileged") == "1" or custom_idmap
    ostype = conf.get("ostype", "unmanaged")
    inc = LXC_CONFIG_DIR / f"{ostype}.common.conf"
    lines.append(f"lxc.include = {inc if inc.is_file() else LXC_CONFIG_DIR / 'common.conf'}")
    if unpriv:
        inc = LXC_CONFIG_DIR / f"{ostype}.userns.conf"
        lines.append(f"lxc.include = {inc if inc.is_file() else LXC_CONFIG_DIR / 'userns.conf'}")
    features = parse_prop(conf.get("features", ""), "")
    if features.get("fuse") == "1":
        lines.append("lxc.mount.entry = /dev/fuse dev/fuse none bind,create=file 0 0")
    if unpriv and features.get("force_rw_sys") != "1":
        lines.append("lxc.mount.auto = sys:mixed")
    lines.append("lxc.monitor.unshare = 1")
    if unpriv and not custom_idmap:
        lines += ["lxc.idmap = u 0 100000 65536", "lxc.idmap = g 0 100000 65536"]
    if conf.get("console", "1") == "0":
        lines.append("lxc.console.path = none")
        # stand-in: with no console, LXC 5 does not make /dev/<tty.dir> and then fails on
        # "Failed to create .../lxc/tty1"; the ttys go straight to /dev instead.
        lines.append("lxc.tty.dir =")
        lines.append("lxc.cgroup.devices.deny = c 5:1 rwm" if _v1("devices")
                     else "lxc.cgroup2.devices.deny = c 5:1 rwm")
    # PVE::LXC::Config get_tty_count: 'tty' (default 2); cmode console means 0 extra ttys?
    # No: get_tty_count returns $conf->{tty} // 2 regardless of cmode.
    lines.append(f"lxc.tty.max = {conf.get('tty', '2')}")
    lines.append("lxc.autodev = 1")  # stand-in: Debian's common.conf (lxc.tty.dir) needs it
    lines.append("lxc.environment = TERM=linux")
    lines.append(f"lxc.uts.name = {conf.get('hostname') or f'CT{vmid}'}")
    memory = int(conf.get("memory", "512"))
    swap = int(conf.get("swap", "0"))
    if _v1("memory"):
        lines.append(f"lxc.cgroup.memory.limit_in_bytes = {memory * 1024 * 1024}")
        # stand-in: PVE writes memsw unconditionally on v1; without swap accounting LXC
        # would fail to start, so it is left out where the file does not exist.
        if (CGROUP_V1 / "memory" / "memory.memsw.limit_in_bytes").exists():
            lines.append(f"lxc.cgroup.memory.memsw.limit_in_bytes = "
                         f"{(memory + swap) * 1024 * 1024}")
    else:
        # PVE::LXC::Config calculate_memory_constraints: high = max - max/16 (rounded).
        mem_max = memory * 1024 * 1024
        lines.append(f"lxc.cgroup2.memory.max = {mem_max}")
        lines.append(f"lxc.cgroup2.memory.high = {mem_max - mem_max // 16}")
        lines.append(f"lxc.cgroup2.memory.swap.max = {swap * 1024 * 1024}")
    cpulimit = float(conf.get("cpulimit", "0") or 0)
    if _v1("cpu"):
        if cpulimit:
            lines.append("lxc.cgroup.cpu.cfs_period_us = 100000")
            lines.append(f"lxc.cgroup.cpu.cfs_quota_us = {int(100000 * cpulimit)}")
        # PVE::CGroup clamp_cpu_shares: default 1024 on v1, range 2..262144.
        shares = int(conf.get("cpuunits", "1024"))
        lines.append(f"lxc.cgroup.cpu.shares = {min(max(shares, 2), 262144)}")
    else:
        if cpulimit:
            lines.append(f"lxc.cgroup2.cpu.max = {int(100000 * cpulimit)} 100000")
        if "cpuunits" in conf:
            lines.append(f"lxc.cgroup2.cpu.weight = {min(max(int(conf['cpuunits']), 1), 10000)}")
    lines.append(f"lxc.rootfs.path = {lxcpath / str(vmid) / 'rootfs'}")
    for key in sorted(k for k in conf if k.startswith("net") and k[3:].isdigit()):
        n = key[3:]
        net = parse_prop(conf[key], "")
        lines.append(f"lxc.net.{n}.type = veth")
        lines.append(f"lxc.net.{n}.veth.pair = veth{vmid}i{n}")
        if "hwaddr" in net:
            lines.append(f"lxc.net.{n}.hwaddr = {net['hwaddr']}")
        if "name" in net:
            lines.append(f"lxc.net.{n}.name = {net['name']}")
        if "bridge" in net and "link_down" not in net:
            # stand-in: instead of lxcnetaddbr, LXC plugs the veth into the mapped bridge.
            lines.append(f"lxc.net.{n}.link = {bridges.get(net['bridge'], net['bridge'])}")
        lines.append(f"lxc.net.{n}.mtu = {net.get('mtu', '1500')}")
        if net.get("host-managed") == "1" and net.get("ip") not in (None, "dhcp", "manual"):
            # PVE 9.1 host-managed NICs: the host sets the static address (LXC.pm).
            lines.append(f"lxc.net.{n}.ipv4.address = {net['ip']}")
            if "gw" in net:
                lines.append(f"lxc.net.{n}.ipv4.gateway = {net['gw']}")
            lines.append(f"lxc.net.{n}.flags = up")
    entrypoint = conf.get("entrypoint")
    if entrypoint:
        lines.append(f"lxc.init.cmd = {entrypoint}")
    # stand-in: lxc.environment.runtime is in PVE 9's lxc-pve, not in every LXC 6 (Debian 13's
    # 6.0.4 refuses it: docs/pve9-differences.md); where LXC lacks it the same variables go to
    # lxc.environment, which also reaches lxc-attach.
    env_key = ("lxc.environment.runtime" if lxc_supports_key("lxc.environment.runtime")
               else "lxc.environment")
    for item in (conf.get("env") or "").split("\0"):
        if item:
            lines.append(f"{env_key} = {item}")
    for k, v in lxc_raw:
        lines.append(f"{k} = {v}")
    for line in lines:
        # A value with a line break would add LXC keys of the caller's choosing (PVE 9.1's
        # entrypoint pattern lets \x0a through: proxmox-api.md / shared/pve-api README).
        if "\n" in line or "\r" in line:
            raise TaskFailed(f"refusing a line break in the LXC config: {line.splitlines()[0]!r}")
    return "\n".join(lines) + "\n"


class LxcRunner:
    """Starts, watches and stops the CTs' ``lxc-start -F`` processes in one lxcpath."""

    def __init__(self, lxcpath: Path, rundir: Path) -> None:
        self.lxcpath = lxcpath
        self.rundir = rundir
        lxcpath.mkdir(parents=True, exist_ok=True)
        rundir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.started_at: dict[int, float] = {}
        self.exited: dict[int, asyncio.Event] = {}
        self._watchers: dict[int, asyncio.Task[None]] = {}

    def ct_dir(self, vmid: int) -> Path:
        return self.lxcpath / str(vmid)

    def stderr_path(self, vmid: int) -> Path:
        return self.rundir / f"ct-{vmid}.stderr"

    def write_config(self, vmid: int, text: str) -> None:
        d = self.ct_dir(vmid)
        (d / "rootfs").mkdir(parents=True, exist_ok=True)
        (d / "config").write_text(text)

    def is_running(self, vmid: int) -> bool:
        proc = self.procs.get(vmid)
        return proc is not None and proc.returncode is None

    async def start(self, vmid: int, volume_path: Path) -> None:
        rootfs = self.ct_dir(vmid) / "rootfs"
        # The prestart hook's job (lxc-pve-prestart-hook → PVE::LXC::mount_all): the rootfs
        # volume appears at /var/lib/lxc/<vmid>/rootfs.
        await _run_ok("mount", "--bind", str(volume_path), str(rootfs))
        stderr = open(self.stderr_path(vmid), "wb")
        try:
            proc = await asyncio.create_subprocess_exec(
                "lxc-start", "-F", "-n", str(vmid), "-P", str(self.lxcpath),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                start_new_session=True)
        except OSError:
            await _run_ok("umount", "-l", str(rootfs))
            raise
        finally:
            stderr.close()
        self.procs[vmid] = proc
        self.started_at[vmid] = time.time()
        self.exited[vmid] = asyncio.Event()
        self._watchers[vmid] = asyncio.get_running_loop().create_task(
            self._watch(vmid, proc, rootfs))
        # vm_start returns once the container runs; lxc-start failing means the start failed.
        deadline = time.monotonic() + 30
        while True:
            if proc.returncode is not None or self.exited[vmid].is_set():
                raise TaskFailed(f"startup for container '{vmid}' failed")
            if await self.state(vmid) == "RUNNING":
                return
            if time.monotonic() > deadline:
                raise TaskFailed(f"startup for container '{vmid}' failed")
            await asyncio.sleep(0.05)

    async def _watch(self, vmid: int, proc: asyncio.subprocess.Process, rootfs: Path) -> None:
        await proc.wait()
        # The poststop hook's job (lxc-pve-poststop-hook → umount_all); never raises, so the
        # exit is always recorded.
        if (await _status("umount", str(rootfs))) != 0:
            await _capture("umount", "-l", str(rootfs))
        self.exited[vmid].set()

    async def state(self, vmid: int) -> str:
        out = await _capture("lxc-info", "-P", str(self.lxcpath), "-n", str(vmid), "-s", "-H")
        return out.strip() or "STOPPED"

    async def pid(self, vmid: int) -> int | None:
        out = await _capture("lxc-info", "-P", str(self.lxcpath), "-n", str(vmid), "-p", "-H")
        return int(out.strip()) if out.strip().isdigit() else None

    async def stop(self, vmid: int, kill: bool, timeout: float | None = None) -> None:
        """``lxc-stop --kill`` (stop) or ``lxc-stop --nokill --timeout T`` (shutdown), as
        pve-container ``PVE::LXC::vm_stop``."""
        argv = ["lxc-stop", "-P", str(self.lxcpath), "-n", str(vmid)]
        argv += ["--kill"] if kill else ["--nokill", "--timeout", str(int(timeout or 60))]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = await proc.communicate()
        ev = self.exited.get(vmid)
        if proc.returncode != 0 and self.is_running(vmid):
            raise TaskFailed(f"command '{' '.join(argv)}' failed: exit code {proc.returncode}")
        if ev is not None:
            try:
                await asyncio.wait_for(ev.wait(), 30)
            except TimeoutError:
                raise TaskFailed("container did not stop") from None

    async def kill_all(self) -> None:
        """Stand-in shutdown: every CT goes (SIGKILL to the monitors, by PID)."""
        for vmid, proc in list(self.procs.items()):
            if proc.returncode is None:
                await _capture("lxc-stop", "-P", str(self.lxcpath), "-n", str(vmid), "--kill")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), 10)
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
        for w in self._watchers.values():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(w), 10)


async def _capture(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, _ = await proc.communicate()
    return out.decode(errors="replace")


async def _run_ok(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise TaskFailed(f"command '{' '.join(argv)}' failed: exit code {proc.returncode}"
                         f"\n{err.decode(errors='replace').strip()}")


async def _status(*argv: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return await proc.wait()
