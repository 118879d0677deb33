"""One Proxmox VE node's behaviour behind the API: CTs, locks, tasks, storage, network.

Every rule is taken from the Proxmox source named at the spot (pve-container
``src/PVE/API2/LXC.pm``, ``API2/LXC/Status.pm``, ``API2/LXC/Config.pm``,
``API2/LXC/Snapshot.pm``, ``LXC.pm``, ``LXC/Config.pm``, ``LXC/Create.pm``; pve-guest-common
``PVE/AbstractConfig.pm``; pve-cluster ``PVE/Cluster.pm``; pve-manager ``PVE/API2/Cluster.pm``)
and listed with its source in docs/proxmox.md. Handlers get the validated parameters and the
caller's identity and return the value for ``{"data": ...}`` or raise :class:`ApiError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import re
import shutil
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.pvestandin.errors import die, param_exc, perm_exc
from tests.pvestandin.lxc import LxcRunner, host_arch, lxc_config, parse_prop
from tests.pvestandin.perms import check_privs
from tests.pvestandin.storage import DirStorage, Volume, ZfsPoolStorage, run
from tests.pvestandin.tasks import Task, TaskFailed, Tasks
from tests.pvestandin.validate import parse_size

#: PVE::LXC::Config's new-disk syntax (``STORAGE:SIZE_IN_GiB`` or a bare size).
NEW_DISK_RE = re.compile(r"(?:([^/:\s]+):)?(\d+(?:\.\d+)?)")
#: The one identity the root-only rules let through (LXC.pm check_ct_modify_config_perm).
ROOT = "root@pam"
#: Characters a description line keeps as they are in the config file.
DESCR_SAFE = " !\"$&'()*+,-./:;<=>?@[\\]^_`{|}~"


@dataclass(frozen=True)
class Caller:
    authid: str       # user@realm or user@realm!tokenid
    token: bool
    #: Privileges on every path; None: all (root@pam, or a token configured so). perms.py.
    privs: frozenset[str] | None = None

    @property
    def user(self) -> str:
        return self.authid.split("!", 1)[0]


@dataclass
class CT:
    vmid: int
    conf: dict[str, str]
    lxc: list[tuple[str, str]] = field(default_factory=list)
    snapshots: dict[str, dict[str, str]] = field(default_factory=dict)


def format_size(size: int) -> str:  # pve-common JSONSchema.pm format_size
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)


class Node:
    def __init__(self, *, name: str, root: Path, zfs_parent: str | None,
                 bridges: dict[str, str], vlan_filtering: bool,
                 task_delay: dict[str, float] | None = None,
                 nextid_range: tuple[int, int] = (100, 1000000),
                 version: str = "9.2.0", lxcpath: Path | None = None) -> None:
        self.name = name
        self.root = root
        self.version = version
        self.tasks = Tasks(name, task_delay)
        self.cts: dict[int, CT] = {}
        self.bridges = bridges                  # PVE name → host link name
        self.vlan_filtering = vlan_filtering    # whether vmbr0 really filters VLANs here
        self.nextid_range = nextid_range
        self.storages: dict[str, DirStorage | ZfsPoolStorage] = {
            "local": DirStorage("local", root / "var/lib/vz")}
        if zfs_parent:
            self.storages["local-zfs"] = ZfsPoolStorage("local-zfs", zfs_parent)
        # The lxcpath: a node's is /var/lib/lxc; the stand-in's own unless told otherwise.
        self.lxc = LxcRunner(lxcpath or root / "var/lib/lxc", root / "run/pve")
        self._flocks: dict[int, asyncio.Lock] = {}
        self.conf_dir = root / "etc/pve/nodes" / name / "lxc"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        # On a node /etc/pve/lxc is a symlink to the local node's folder (pmxcfs).
        (root / "etc/pve/lxc").symlink_to(f"nodes/{name}/lxc")
        self._mtimes: dict[int, int] = {}
        self.task_faults: dict[str, list[str]] = {}

    # -- config files and locks ----------------------------------------------------------

    def conf_path_text(self, vmid: int) -> str:
        return f"nodes/{self.name}/lxc/{vmid}.conf"

    def load(self, vmid: int) -> CT:
        """PVE::AbstractConfig load_config's die for a missing file (on this node)."""
        ct = self.cts.get(vmid)
        if ct is None:
            raise die(f"Configuration file '{self.conf_path_text(vmid)}' does not exist")
        return ct

    def render(self, ct: CT) -> str:
        """The CT's ``/etc/pve/lxc/<vmid>.conf`` text (pve-container LXC/Config.pm
        write_pct_config: description as ``#`` lines, ``key: value``, raw lxc keys, then
        ``[snapshot]`` sections)."""
        def section(conf: dict[str, str], lxc: list[tuple[str, str]]) -> str:
            out = ""
            if "description" in conf:  # URL-encoded like PVE::Tools::encode_text
                for line in conf["description"].split("\n"):
                    out += "#" + urllib.parse.quote(line, safe=DESCR_SAFE) + "\n"
            for k in sorted(conf):
                if k != "description":
                    out += f"{k}: {conf[k]}\n"
            for k, v in lxc:
                out += f"{k}: {v}\n"
            return out
        text = section(ct.conf, ct.lxc)
        for name, snap in ct.snapshots.items():
            text += f"\n[{name}]\n" + section(snap, [])
        return text

    def save(self, ct: CT) -> None:
        path = self.conf_dir / f"{ct.vmid}.conf"
        path.write_text(self.render(ct))
        self._mtimes[ct.vmid] = path.stat().st_mtime_ns

    def refresh(self) -> None:
        """The config files are the truth, as /etc/pve is on a node: a file edited, added or
        removed there by hand (as root on a node may, e.g. to add raw ``lxc.*`` keys) is what
        the API shows and what the next start uses."""
        seen: set[int] = set()
        for path in self.conf_dir.glob("*.conf"):
            if not path.stem.isdigit():
                continue
            vmid = int(path.stem)
            seen.add(vmid)
            try:
                mtime = path.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if self._mtimes.get(vmid) != mtime or vmid not in self.cts:
                conf, lxc, snaps = parse_pct_config(path.read_text())
                self.cts[vmid] = CT(vmid, conf, lxc, snaps)
                self._mtimes[vmid] = mtime
        for vmid in set(self.cts) - seen:
            self.cts.pop(vmid, None)
            self._mtimes.pop(vmid, None)

    def digest(self, ct: CT) -> str:
        return hashlib.sha1(self.render(ct).encode()).hexdigest()

    @contextlib.asynccontextmanager
    async def flock(self, vmid: int, timeout: float = 10.0) -> AsyncIterator[None]:
        """PVE::AbstractConfig lock_config: flock on /run/lock/lxc/pve-config-<vmid>.lock,
        10 s by default, with PVE::Tools::lock_file's timeout text."""
        lock = self._flocks.setdefault(vmid, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), timeout)
        except TimeoutError:
            raise die(f"can't lock file '/run/lock/lxc/pve-config-{vmid}.lock' - got timeout") \
                from None
        try:
            yield
        finally:
            lock.release()

    @staticmethod
    def check_lock(ct: CT, allow: tuple[str, ...] = ()) -> None:
        """PVE::AbstractConfig check_lock: ``CT is locked (<lock>)``."""
        lock = ct.conf.get("lock")
        if lock and lock not in allow:
            raise TaskFailed(f"CT is locked ({lock})")

    def running(self, vmid: int) -> bool:
        return self.lxc.is_running(vmid)

    def worker(self, wtype: str, vmid: int, caller: Caller,
               body: Callable[[Task], Awaitable[None]]) -> str:
        if wtype in ("vzcreate", "vzclone"):
            run_body = body  # these call fault() inside their own clean-up scope
        else:
            async def run_body(task: Task) -> None:
                self.fault(task)
                await body(task)
        return self.tasks.start(wtype, str(vmid), caller.authid, run_body).upid

    def inject_task_failure(self, wtype: str, message: str, times: int = 1) -> None:
        """Tests: the next ``times`` workers of ``wtype`` fail with ``message`` (as a node's
        worker dies), after the pre-checks and with the worker's own clean-up."""
        self.task_faults.setdefault(wtype, []).extend([message] * times)

    def fault(self, task: Task) -> None:
        queue = self.task_faults.get(task.type)
        if queue:
            raise TaskFailed(queue.pop(0))

    # -- permissions a token may not have (pve-container LXC.pm check_ct_modify_config_perm)

    def check_modify_perm(self, caller: Caller, new: dict[str, Any], unprivileged: bool,
                          vmid: int, old: dict[str, str] | None = None,
                          delete: Sequence[str] = ()) -> None:
        """pve-container LXC.pm check_ct_modify_config_perm: root@pam may do anything; any
        other caller (tokens of root@pam included) needs the option's privilege on
        /vms/<vmid> and may not touch the root-only options."""
        if caller.authid == ROOT:
            return
        vms = f"/vms/{vmid}"
        keys = [(k, False) for k in new] + [(k, True) for k in delete]
        for k, deleting in keys:
            if k in ("cores", "cpuunits", "cpulimit"):
                check_privs(caller.privs, vms, ["VM.Config.CPU"])
            elif k == "rootfs" or re.fullmatch(r"mp\d+", k):
                check_privs(caller.privs, vms, ["VM.Config.Disk"])
                if deleting:
                    continue
                vol = parse_prop(str(new[k]), "volume").get("volume", "")
                kind = classify_mountpoint(vol)
                if kind != "volume":
                    raise perm_exc(f"mount point type {kind} is only allowed for root@pam")
                m = NEW_DISK_RE.fullmatch(vol)
                if m:
                    sid = m.group(1) or str(new.get("storage", "local"))
                    check_privs(caller.privs, f"/storage/{sid}", ["Datastore.AllocateSpace"])
            elif k in ("memory", "swap"):
                check_privs(caller.privs, vms, ["VM.Config.Memory"])
            elif re.fullmatch(r"net\d+", k):
                check_privs(caller.privs, vms, ["VM.Config.Network"])
                if not deleting:
                    # pve-guest-common GuestHelpers.pm check_vnet_access
                    net = parse_prop(str(new[k]), "")
                    path = f"/sdn/zones/localnetwork/{net.get('bridge', '')}"
                    if "tag" in net:
                        path += f"/{net['tag']}"
                    check_privs(caller.privs, path, ["SDN.Use"])
            elif re.fullmatch(r"dev\d+", k):
                raise perm_exc("configuring device passthrough is only allowed for root@pam")
            elif k in ("nameserver", "searchdomain", "hostname"):
                check_privs(caller.privs, vms, ["VM.Config.Network"])
            elif k == "features":
                if not unprivileged:
                    raise perm_exc("changing feature flags for privileged container is only "
                                   "allowed for root@pam")
                newf = {} if deleting else parse_prop(str(new[k]), "")
                oldf = parse_prop((old or {}).get("features", ""), "")
                changed = {f for f in set(newf) | set(oldf) if newf.get(f) != oldf.get(f)}
                if changed - {"nesting"}:
                    raise perm_exc("changing feature flags (except nesting) is only allowed "
                                   "for root@pam")
                if changed:
                    check_privs(caller.privs, vms, ["VM.Allocate"])
            elif k == "hookscript":
                raise perm_exc("changing the hookscript is only allowed for root@pam")
            elif k in ("unprivileged", "storage", "vmid", "node", "ostemplate"):
                continue  # create_vm parameters, not options (checked by create_vm itself)
            else:
                check_privs(caller.privs, vms, ["VM.Config.Options"])

    # -- read-only endpoints -------------------------------------------------------------

    def version_info(self) -> dict[str, Any]:
        return {"version": self.version, "release": self.version.rsplit(".", 1)[0],
                "repoid": "5ta1d1n0"}

    def nextid(self, vmid: str | None) -> str:
        """pve-manager PVE/API2/Cluster.pm nextid: the first unused id of the range, as a
        string (the Perl loop variable is stringified; proxmox-api.md §3.4)."""
        if vmid is not None:
            if int(vmid) in self.cts:
                raise param_exc({"vmid": f"VM {vmid} already exists"})
            return str(vmid)
        lower, upper = self.nextid_range
        for i in range(lower, upper):
            if i not in self.cts:
                return str(i)
        raise die(f"unable to get any free VMID in range [{lower}, {upper}]")

    async def ct_status(self, ct: CT) -> dict[str, Any]:
        """status/current and list items, with the undeclared fields real nodes send
        (proxmox-api.md §3.4 item 1: type, swap, pid, ha)."""
        conf = ct.conf
        running = self.running(ct.vmid)
        rootfs = parse_prop(conf.get("rootfs", ""), "volume")
        maxdisk = parse_size(rootfs.get("size", "")) or (4 << 30)
        out: dict[str, Any] = {
            "vmid": ct.vmid, "name": conf.get("hostname", f"CT{ct.vmid}"),
            "status": "running" if running else "stopped", "type": "lxc",
            "cpus": int(conf.get("cores", "0")) or os.cpu_count() or 1,
            "maxmem": int(conf.get("memory", "512")) << 20,
            "maxswap": int(conf.get("swap", "512")) << 20,
            "maxdisk": maxdisk, "mem": 0, "swap": 0, "disk": 0, "cpu": 0, "uptime": 0,
            "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0, "ha": {"managed": 0}}
        if "lock" in conf:
            out["lock"] = conf["lock"]
        if "tags" in conf:
            out["tags"] = conf["tags"]
        if conf.get("template") == "1":
            out["template"] = 1
        if running:
            out["pid"] = await self.lxc.pid(ct.vmid)
            out["uptime"] = int(time.time() - self.lxc.started_at.get(ct.vmid, time.time()))
            mem = Path(f"/sys/fs/cgroup/memory/lxc/{ct.vmid}/memory.usage_in_bytes")
            with contextlib.suppress(OSError, ValueError):
                out["mem"] = int(mem.read_text())
            for k in ("pressurecpusome", "pressurecpufull", "pressureiosome", "pressureiofull",
                      "pressurememorysome", "pressurememoryfull"):
                out[k] = None
        return out

    def typed_conf(self, conf: dict[str, str], props: dict[str, Any]) -> dict[str, Any]:
        """GET config values typed as PVE::LXC::Config check_type returns them (integers
        and booleans as numbers)."""
        out: dict[str, Any] = {}
        for k, v in conf.items():
            typ = (props.get(k) or {}).get("type")
            if typ in ("integer", "boolean") and re.fullmatch(r"-?\d+", v):
                out[k] = int(v)
            elif typ == "number" and re.fullmatch(r"-?\d+(\.\d+)?", v):
                out[k] = float(v) if "." in v else int(v)
            else:
                out[k] = v
        return out

    # -- create --------------------------------------------------------------------------

    async def create(self, p: dict[str, Any], caller: Caller) -> str:
        """POST /nodes/{node}/lxc (pve-container API2/LXC.pm create_vm)."""
        vmid = int(p.pop("vmid"))
        p.pop("node", None)
        ostemplate = str(p.pop("ostemplate"))
        storage = str(p.pop("storage", "local"))
        start = str(p.pop("start", "0")) == "1"
        p.pop("restore", None)
        p.pop("force", None)
        for k in ("password", "ssh-public-keys", "pool", "ignore-unpack-errors", "bwlimit",
                  "unique", "ha-managed", "debug", "timezone"):
            p.pop(k, None)
        unprivileged = str(p.get("unprivileged", "1")) == "1"
        p["unprivileged"] = "1" if unprivileged else "0"
        if storage not in self.storages:
            raise die(f"storage '{storage}' does not exist")
        # create_vm: VM.Allocate on the CT, Sys.Modify on / for a privileged one, then the
        # per-option checks.
        if caller.authid != ROOT:
            check_privs(caller.privs, f"/vms/{vmid}", ["VM.Allocate"])
            if not unprivileged:
                check_privs(caller.privs, "/", ["Sys.Modify"])
        self.check_modify_perm(caller, {**p, "storage": storage}, unprivileged, vmid)
        if "rootfs" not in p:
            p["rootfs"] = f"{storage}:4"  # create_vm: default disk is <storage>:4 (GiB)
        for k in [k for k in p if k == "rootfs" or re.fullmatch(r"mp\d+", k)]:
            vol = parse_prop(str(p[k]), "volume")["volume"]
            m = NEW_DISK_RE.fullmatch(vol)
            sid = (m.group(1) or storage) if m else vol.split(":", 1)[0]
            if vol.startswith("/"):
                continue
            if sid not in self.storages:
                raise die(f"storage '{sid}' does not exist")
            if self.storages[sid].type == "dir" and sid != "local":
                raise param_exc({"storage": f"storage '{sid}' does not support container "
                                            "directories"})
        tsid, _, tname = ostemplate.partition(":")
        tstore = self.storages.get(tsid)
        if not isinstance(tstore, DirStorage):
            raise die(f"storage '{tsid}' does not exist")
        # PVE::AbstractConfig create_and_lock_config → PVE::Cluster check_vmid_unused, then a
        # config holding only 'lock: create' is written before the worker starts.
        if vmid in self.cts:
            raise die(f"CT {vmid} already exists on node '{self.name}'")
        ct = CT(vmid, {"lock": "create"})
        self.cts[vmid] = ct
        self.save(ct)

        async def body(task: Task) -> None:
            made: list[Volume] = []
            try:
                self.fault(task)
                async with self.flock(vmid):
                    await self._create_body(task, ct, p, storage, tstore, tname, made)
            except TaskFailed as e:
                for vol in made:
                    with contextlib.suppress(Exception):
                        await self.storages[vol.storage].free(vol.name)
                self._forget(vmid)
                raise TaskFailed(f"unable to create CT {vmid} - {e}") from None
            if start:
                await self._start_body(task, vmid, skiplock=False)

        return self.worker("vzcreate", vmid, caller, body)

    async def _create_body(self, task: Task, ct: CT, p: dict[str, Any], storage: str,
                           tstore: DirStorage, tname: str, made: list[Volume]) -> None:
        vmid = ct.vmid
        tpath = tstore.template_path(tname)
        if tpath is None or not tpath.is_file():
            raise TaskFailed(f"volume '{tstore.sid}:{tname}' does not exist")
        conf: dict[str, str] = {k: str(v) for k, v in p.items()}
        disk_index = 0
        root_path: Path | None = None
        for k in sorted((k for k in conf if k == "rootfs" or re.fullmatch(r"mp\d+", k)),
                        key=lambda k: (k != "rootfs", k)):
            mp = parse_prop(conf[k], "volume")
            m = NEW_DISK_RE.fullmatch(mp["volume"])
            if not m:
                continue  # existing volume or bind mount: used as given
            sid = m.group(1) or storage
            size = int(float(m.group(2)) * (1 << 30))
            vol = await self.storages[sid].alloc(vmid, size, disk_index)
            disk_index += 1
            made.append(vol)
            task.log.append(f"allocated volume {vol.volid}")
            rest = {kk: vv for kk, vv in mp.items() if kk not in ("volume", "size")}
            conf[k] = ",".join([vol.volid] + [f"{kk}={vv}" for kk, vv in rest.items()]
                               + ([f"size={format_size(size)}"] if size else []))
            if k == "rootfs":
                root_path = vol.path
        if root_path is None:
            raise TaskFailed("rootfs is not a new volume (the stand-in only allocates)")
        task.log.append(f"extracting archive '{tpath}'")
        await run("tar", "-xpf", str(tpath), "-C", str(root_path), "--numeric-owner")
        if conf["unprivileged"] == "1":
            # PVE::LXC::Create restore_archive untars inside the CT's user namespace
            # (lxc-usernsexec, ids shifted by 100000); shifting afterwards gives the same tree.
            await asyncio.get_running_loop().run_in_executor(None, shift_ids, root_path, 100000)
        osrel = root_path / "etc/os-release"
        ostype = "unmanaged"
        if osrel.is_file():
            m2 = re.search(r"^ID=\"?([a-z]+)", osrel.read_text(errors="replace"), re.M)
            if m2 and m2.group(1) in ("debian", "devuan", "ubuntu", "centos", "fedora",
                                      "opensuse", "archlinux", "alpine", "gentoo", "nixos"):
                ostype = m2.group(1)
        conf.setdefault("ostype", ostype)
        conf.setdefault("arch", host_arch())
        conf.setdefault("hostname", f"CT{vmid}")
        conf.setdefault("memory", "512")
        conf.setdefault("swap", "512")
        for k in [k for k in conf if re.fullmatch(r"net\d+", k)]:
            net = parse_prop(conf[k], "")
            if "hwaddr" not in net:
                # PVE::Tools::random_ether_addr with the datacenter mac_prefix (BC:24:11).
                conf[k] += ",hwaddr=BC:24:11:" + ":".join(
                    f"{random.randrange(256):02X}" for _ in range(3))
            if "type" not in net:
                conf[k] += ",type=veth"
        ct.conf = conf  # the lock goes with the final config (create_vm's last write)
        self.save(ct)
        task.log.append(f"CT {vmid} created")

    def _forget(self, vmid: int) -> None:
        self.cts.pop(vmid, None)
        self._mtimes.pop(vmid, None)
        (self.conf_dir / f"{vmid}.conf").unlink(missing_ok=True)
        shutil.rmtree(self.lxc.ct_dir(vmid), ignore_errors=True)

    # -- start / stop --------------------------------------------------------------------

    def _volume(self, spec: str) -> Volume | None:
        volid = parse_prop(spec, "volume")["volume"]
        sid, _, name = volid.partition(":")
        store = self.storages.get(sid)
        return store.volume(name) if store else None

    async def _start_body(self, task: Task, vmid: int, skiplock: bool) -> None:
        async with self.flock(vmid):
            ct = self.cts.get(vmid)
            if ct is None:
                raise TaskFailed(f"Configuration file '{self.conf_path_text(vmid)}' does not "
                                 "exist")
            if not skiplock:
                self.check_lock(ct)
            if self.running(vmid):
                raise TaskFailed(f"CT {vmid} already running")
            if ct.conf.get("template") == "1":
                raise TaskFailed("you can't start a CT if it's a template")  # Status.pm
            if "rootfs" not in ct.conf:
                raise TaskFailed("missing 'rootfs' configuration")  # update_lxc_config
            vol = self._volume(ct.conf["rootfs"])
            if vol is None:
                volid = parse_prop(ct.conf["rootfs"], "volume")["volume"]
                raise TaskFailed(f"volume '{volid}' does not exist")
            for k in sorted(k for k in ct.conf if re.fullmatch(r"net\d+", k)):
                net = parse_prop(ct.conf[k], "")
                br = net.get("bridge")
                if br and br not in self.bridges:
                    # pve-common PVE/Network.pm tap_plug / lxcnetaddbr
                    raise TaskFailed(f"bridge '{br}' does not exist")
                if br and "tag" in net and br != "vmbr0":
                    # Not VLAN-aware: PVE::Network creates <br>v<tag> on the bridge's
                    # physical port, and has none here.
                    raise TaskFailed(f"no physical interface on bridge '{br}'")
            raw = list(ct.lxc)
            for k in sorted(k for k in ct.conf if re.fullmatch(r"mp\d+", k)):
                mp = parse_prop(ct.conf[k], "volume")
                path = Path(mp["volume"]) if mp["volume"].startswith("/") else \
                    getattr(self._volume(ct.conf[k]), "path", None)
                if path is not None:
                    ro = ",ro" if mp.get("ro") == "1" else ""
                    raw.append(("lxc.mount.entry",
                                f"{path} {mp['mp'].lstrip('/')} none bind,create=dir{ro} 0 0"))
            self.lxc.write_config(vmid, lxc_config(vmid, ct.conf, raw, self.lxc.lxcpath,
                                                   self.bridges))
            task.log.append(f"starting CT {vmid}")
            await self.lxc.start(vmid, vol.path)
            for k in sorted(k for k in ct.conf if re.fullmatch(r"net\d+", k)):
                net = parse_prop(ct.conf[k], "")
                if "tag" in net and net.get("bridge") == "vmbr0":
                    veth = f"veth{vmid}i{k[3:]}"
                    if self.vlan_filtering:
                        await run("bridge", "vlan", "add", "dev", veth, "vid", net["tag"],
                                  "pvid", "untagged", "master")
                    else:
                        task.log.append(f"stand-in: kernel lacks bridge VLAN filtering; tag "
                                        f"{net['tag']} of {veth} recorded, not applied")

    async def start(self, vmid: int, skiplock: bool, caller: Caller) -> str:
        """POST status/start (API2/LXC/Status.pm vm_start): 'already running' is checked
        before the worker; a missing config only fails inside it (proxmox-api.md §3.3a)."""
        if skiplock and caller.authid != ROOT:
            raise param_exc({"skiplock": "Only root may use this option."})
        if self.running(vmid):
            raise die(f"CT {vmid} already running")

        async def body(task: Task) -> None:
            await self._start_body(task, vmid, skiplock)
        return self.worker("vzstart", vmid, caller, body)

    async def stop(self, vmid: int, caller: Caller, *, shutdown: bool, skiplock: bool = False,
                   timeout: int = 60, force_stop: bool = False) -> str:
        """POST status/stop|shutdown (Status.pm vm_stop / vm_shutdown)."""
        if skiplock and caller.authid != ROOT:
            raise param_exc({"skiplock": "Only root may use this option."})
        if not self.running(vmid):
            raise die(f"CT {vmid} not running")

        async def body(task: Task) -> None:
            async with self.flock(vmid):
                ct = self.cts.get(vmid)
                if ct is None:
                    raise TaskFailed(f"Configuration file '{self.conf_path_text(vmid)}' does "
                                     "not exist")
                if not skiplock:
                    self.check_lock(ct, allow=() if shutdown else ("mounted",))
                if shutdown:
                    try:
                        await self.lxc.stop(vmid, kill=False, timeout=timeout)
                    except TaskFailed:
                        if not force_stop:
                            raise
                        await self.lxc.stop(vmid, kill=True)
                else:
                    await self.lxc.stop(vmid, kill=True)
        return self.worker("vzshutdown" if shutdown else "vzstop", vmid, caller, body)

    # -- destroy -------------------------------------------------------------------------

    async def destroy(self, vmid: int, caller: Caller, force: bool) -> str:
        """DELETE /nodes/{node}/lxc/{vmid} (API2/LXC.pm destroy_vm): lock, protection and
        running checks before the worker."""
        ct = self.load(vmid)
        if ct.conf.get("protection") == "1":
            raise die(f"can't remove CT {vmid} - protection mode enabled")
        lock = ct.conf.get("lock")
        if lock:
            raise die(f"CT is locked ({lock})")
        if self.running(vmid) and not force:
            raise die(f"unable to destroy CT {vmid} - container is running")

        async def body(task: Task) -> None:
            if self.running(vmid):
                await self.lxc.stop(vmid, kill=True)
            async with self.flock(vmid):
                ct2 = self.cts.get(vmid)
                if ct2 is None:
                    raise TaskFailed(f"Configuration file '{self.conf_path_text(vmid)}' does "
                                     "not exist")
                self.check_lock(ct2)
                if self.running(vmid):
                    raise TaskFailed(f"unable to destroy CT {vmid} - container is running")
                for k in sorted(ct2.conf):
                    if k == "rootfs" or re.fullmatch(r"(mp|unused)\d+", k):
                        volid = parse_prop(ct2.conf[k], "volume")["volume"]
                        sid, _, name = volid.partition(":")
                        store = self.storages.get(sid)
                        if store and not volid.startswith("/"):
                            await store.free(name)
                            task.log.append(f"removed volume {volid}")
                self._forget(vmid)
        return self.worker("vzdestroy", vmid, caller, body)

    # -- templates and clones (API2/LXC.pm template, clone_vm; LXC.pm template_create) ----

    async def template(self, vmid: int, caller: Caller) -> None:
        """POST {vmid}/template: checks under the flock, then a ``vztemplate`` worker whose
        UPID the API does not return (``returns: null``): clients watch ``template: 1``."""
        async with self.flock(vmid):
            ct = self.load(vmid)
            if ct.conf.get("lock"):
                raise die(f"CT is locked ({ct.conf['lock']})")
            if ct.snapshots:
                raise die("unable to create template, because CT contains snapshots")
            if ct.conf.get("template") == "1":
                raise die("you can't convert a template to a template")
            if self.running(vmid):
                raise die("you can't convert a CT to template if the CT is running")
            for store, _name in self._volumes(ct):
                if isinstance(store, DirStorage):
                    raise die(f"Directory storage '{store.sid}' does not support container "
                              "templates!")

            async def body(task: Task) -> None:
                async with self.flock(vmid):
                    for k in sorted(ct.conf):
                        if k == "rootfs" or re.fullmatch(r"mp\d+", k):
                            mp = parse_prop(ct.conf[k], "volume")
                            sid, _, name = mp["volume"].partition(":")
                            store = self.storages[sid]
                            assert isinstance(store, ZfsPoolStorage)
                            base = await store.create_base(name)
                            ct.conf[k] = ct.conf[k].replace(mp["volume"], f"{sid}:{base}", 1)
                    ct.conf["template"] = "1"
                    self.save(ct)
                    shutil.rmtree(self.lxc.ct_dir(vmid), ignore_errors=True)
            self.worker("vztemplate", vmid, caller, body)

    async def clone(self, vmid: int, p: dict[str, Any], caller: Caller) -> str:
        """POST {vmid}/clone: linked (the default for templates) or full; the source holds
        ``lock: disk`` and the new CT ``lock: create`` while the ``vzclone`` worker runs."""
        newid = int(p["newid"])
        storage = p.get("storage")
        snapname = p.get("snapname")
        if p.get("target") and p["target"] != self.name:
            raise die(f"no such cluster node '{p['target']}'")  # check_node_exists
        async with self.flock(vmid):
            src = self.load(vmid)
            if src.conf.get("lock"):
                raise die(f"CT is locked ({src.conf['lock']})")
            is_template = src.conf.get("template") == "1"
            full = str(p["full"]) == "1" if "full" in p else not is_template
            if storage is not None and not full:
                raise die("parameter 'storage' not allowed for linked clones")
            if snapname and snapname not in src.snapshots:
                raise die(f"snapshot '{snapname}' does not exist")
            if newid in self.cts:
                raise die(f"CT {newid} already exists on node '{self.name}'")
            base_conf = src.snapshots[snapname] if snapname else src.conf
            if full and self.running(vmid) and not snapname:
                raise die("Cannot do full clones on a running container without snapshots")
            newconf: dict[str, str] = {}
            mounts: dict[str, dict[str, str]] = {}
            for k, v in base_conf.items():
                if re.fullmatch(r"unused\d+", k) or k in ("snaptime", "snapstate", "parent"):
                    continue
                if k == "rootfs" or re.fullmatch(r"mp\d+", k):
                    mp = parse_prop(v, "volume")
                    if classify_mountpoint(mp["volume"]) != "volume":
                        raise die(f"unable to clone mountpint '{k}' (type "
                                  f"{classify_mountpoint(mp['volume'])})")
                    if not full and not is_template:
                        raise die(f"Linked clone feature for '{mp['volume']}' is not "
                                  "available")
                    mounts[k] = mp
                    newconf[k] = v
                elif re.fullmatch(r"net\d+", k):
                    net = re.sub(r"hwaddr=[^,]*", "hwaddr=BC:24:11:" + ":".join(
                        f"{random.randrange(256):02X}" for _ in range(3)), v)
                    newconf[k] = net
                else:
                    newconf[k] = v
            newconf.pop("template", None)
            newconf["lock"] = "create"
            for k in ("hostname", "description"):
                if p.get(k):
                    newconf[k] = str(p[k])
            src.conf["lock"] = "disk"
            self.save(src)
            new = CT(newid, newconf)
            self.cts[newid] = new
            self.save(new)

        async def body(task: Task) -> None:
            made: list[tuple[DirStorage | ZfsPoolStorage, str]] = []
            try:
                self.fault(task)
                for index, (k, mp) in enumerate(sorted(mounts.items(),
                                                       key=lambda kv: kv[0] != "rootfs")):
                    sid, _, name = mp["volume"].partition(":")
                    store = self.storages[sid]
                    if full:
                        target = self.storages[storage or sid]
                        task.log.append(f"create full clone of mountpoint {k} ({mp['volume']})")
                        srcvol = store.volume(name)
                        if srcvol is None:
                            raise TaskFailed(f"volume '{mp['volume']}' does not exist")
                        vol = await target.alloc(newid, srcvol.size, index)
                        made.append((target, vol.name))
                        await run("cp", "-a", "--", f"{srcvol.path}/.", str(vol.path))
                        newvolid = vol.volid
                    else:
                        assert isinstance(store, ZfsPoolStorage)
                        task.log.append(f"create linked clone of mount point {k} "
                                        f"({mp['volume']})")
                        newname = await store.clone(name, newid, index)
                        made.append((store, newname))
                        newvolid = f"{sid}:{newname}"
                    async with self.flock(newid):
                        new.conf[k] = new.conf[k].replace(mp["volume"], newvolid, 1)
                        self.save(new)
                async with self.flock(newid):
                    new.conf.pop("lock", None)
                    self.save(new)
            except TaskFailed as e:
                self._forget(newid)
                for store, name in made:
                    with contextlib.suppress(TaskFailed):
                        await store.free(name)
                raise TaskFailed(f"clone failed: {e}") from None
            finally:
                async with self.flock(vmid):
                    if src.conf.get("lock") == "disk":
                        src.conf.pop("lock")
                        self.save(src)
        return self.worker("vzclone", vmid, caller, body)

    # -- config --------------------------------------------------------------------------

    async def update_config(self, vmid: int, p: dict[str, Any], caller: Caller) -> None:
        """PUT config (API2/LXC/Config.pm update_vm): synchronous; lock and digest first."""
        p.pop("node", None)
        p.pop("vmid", None)
        digest = p.pop("digest", None)
        delete = [k for k in re.split(r"[\0,;\s]+", str(p.pop("delete", ""))) if k]
        p.pop("revert", None)
        if not p and not delete:
            raise die("no options specified")
        async with self.flock(vmid):
            ct = self.load(vmid)
            lock = ct.conf.get("lock")
            if lock:
                raise die(f"CT is locked ({lock})")
            if digest is not None and digest != self.digest(ct):
                raise die("detected modified configuration - file changed by other user? "
                          "Try again.")
            unpriv = ct.conf.get("unprivileged") == "1"
            self.check_modify_perm(caller, p, unpriv, vmid, ct.conf, delete)
            for k in delete:
                if k in p:
                    raise param_exc({k: "can't set and delete the same option"})
                ct.conf.pop(k, None)
            for k, v in p.items():
                if k in ("rootfs",) or re.fullmatch(r"mp\d+", k):
                    m = NEW_DISK_RE.fullmatch(parse_prop(str(v), "volume")["volume"])
                    if m:
                        raise die(f"{k}: allocating new volumes on update is not implemented "
                                  "by the stand-in")
                ct.conf[k] = str(v)
            self.save(ct)

    # -- snapshots (API2/LXC/Snapshot.pm; PVE::AbstractConfig snapshot_*) -----------------

    def _volumes(self, ct: CT) -> list[tuple[ZfsPoolStorage | DirStorage, str]]:
        out = []
        for k in sorted(ct.conf):
            if k == "rootfs" or re.fullmatch(r"mp\d+", k):
                volid = parse_prop(ct.conf[k], "volume")["volume"]
                sid, _, name = volid.partition(":")
                if sid in self.storages and not volid.startswith("/"):
                    out.append((self.storages[sid], name))
        return out

    async def snapshot(self, vmid: int, snapname: str, description: str, caller: Caller) -> str:
        """POST snapshot (API2/LXC/Snapshot.pm snapshot → pve-guest-common AbstractConfig.pm
        snapshot_create: __snapshot_prepare, volume snapshots, __snapshot_commit)."""
        self.load(vmid)
        if snapname in ("current", "vzdump"):
            raise die(f"unable to use snapshot name '{snapname}' (reserved name)")

        async def body(task: Task) -> None:
            async with self.flock(vmid):  # __snapshot_prepare
                ct = self.load_task(vmid)
                if ct.conf.get("template") == "1":
                    raise TaskFailed("you can't take a snapshot if it's a template")
                self.check_lock(ct)
                if snapname in ct.snapshots:
                    raise TaskFailed(f"snapshot name '{snapname}' already used")
                if not all(isinstance(st, ZfsPoolStorage) for st, _ in self._volumes(ct)):
                    raise TaskFailed("snapshot feature is not available")
                ct.conf["lock"] = "snapshot"
                # __snapshot_copy_config: all but lock, digest, description, unused<n>, ...
                snap = {k: v for k, v in ct.conf.items()
                        if k not in ("lock", "description") and not k.startswith("unused")}
                snap["snapstate"] = "prepare"
                snap["snaptime"] = str(int(time.time()))
                if description:
                    snap["description"] = description
                ct.snapshots[snapname] = snap
                self.save(ct)
            try:
                for store, name in self._volumes(ct):
                    assert isinstance(store, ZfsPoolStorage)
                    await store.snapshot(name, snapname)
            except TaskFailed as e:
                async with self.flock(vmid):  # snapshot_create's cleanup (snapshot_delete)
                    ct.snapshots.pop(snapname, None)
                    ct.conf.pop("lock", None)
                    self.save(ct)
                raise TaskFailed(str(e)) from None
            async with self.flock(vmid):  # __snapshot_commit
                ct.snapshots[snapname].pop("snapstate", None)
                ct.conf.pop("lock", None)
                ct.conf["parent"] = snapname
                self.save(ct)
        return self.worker("vzsnapshot", vmid, caller, body)

    def load_task(self, vmid: int) -> CT:
        ct = self.cts.get(vmid)
        if ct is None:
            raise TaskFailed(f"Configuration file '{self.conf_path_text(vmid)}' does not exist")
        return ct

    async def rollback(self, vmid: int, snapname: str, start: bool, caller: Caller) -> str:
        """POST snapshot/{snapname}/rollback (AbstractConfig.pm snapshot_rollback): every
        volume's rollback must be possible (ZFS: most recent only) before the CT is stopped
        and locked; description and unused<n> survive, parent becomes the snapshot."""
        self.load(vmid)

        async def body(task: Task) -> None:
            async with self.flock(vmid):
                ct = self.load_task(vmid)
                snap = ct.snapshots.get(snapname)
                if snap is None:
                    raise TaskFailed(f"snapshot '{snapname}' does not exist")
                for store, name in self._volumes(ct):
                    if not isinstance(store, ZfsPoolStorage):
                        raise TaskFailed("snapshot feature is not available")
                    await store.rollback_possible(name, snapname)
                if "snapstate" in snap:
                    raise TaskFailed("unable to rollback to incomplete snapshot (snapstate = "
                                     f"{snap['snapstate']})")
                self.check_lock(ct)
                if self.running(vmid):
                    # pve-container LXC/Config.pm __snapshot_rollback_vm_stop: vm_stop(kill).
                    await self.lxc.stop(vmid, kill=True)
                ct.conf["lock"] = "rollback"
                self.save(ct)
            try:
                for store, name in self._volumes(ct):
                    assert isinstance(store, ZfsPoolStorage)
                    await store.rollback(name, snapname)
            except TaskFailed:
                raise  # the lock stays, as on a node: 'pct unlock' clears it
            async with self.flock(vmid):
                keep = {k: v for k, v in ct.conf.items()
                        if k == "description" or k.startswith("unused")}
                ct.conf = {**{k: v for k, v in snap.items()
                              if k not in ("snaptime", "description", "snapstate")}, **keep}
                ct.conf["parent"] = snapname
                self.save(ct)
            if start:
                await self._start_body(task, vmid, skiplock=False)
        return self.worker("vzrollback", vmid, caller, body)

    async def delete_snapshot(self, vmid: int, snapname: str, force: bool,
                              caller: Caller) -> str:
        """DELETE snapshot/{snapname} (AbstractConfig.pm snapshot_delete)."""
        self.load(vmid)

        async def body(task: Task) -> None:
            async with self.flock(vmid):
                ct = self.load_task(vmid)
                if snapname not in ct.snapshots:
                    raise TaskFailed(f"snapshot '{snapname}' does not exist")
                self.check_lock(ct)  # set_lock checks the lock, force or not
                ct.conf["lock"] = "snapshot-delete"
                ct.snapshots[snapname]["snapstate"] = "delete"
                self.save(ct)
            for store, name in self._volumes(ct):
                if isinstance(store, ZfsPoolStorage):
                    try:
                        await store.delete_snapshot(name, snapname)
                    except TaskFailed as e:
                        if not force:
                            raise
                        task.log.append(str(e))
            async with self.flock(vmid):
                parent = ct.snapshots.pop(snapname).get("parent")
                for conf in [ct.conf, *ct.snapshots.values()]:
                    if conf.get("parent") == snapname:
                        if parent:
                            conf["parent"] = parent
                        else:
                            conf.pop("parent", None)
                ct.conf.pop("lock", None)
                self.save(ct)
        return self.worker("vzdelsnapshot", vmid, caller, body)

    def snapshot_list(self, vmid: int) -> list[dict[str, Any]]:
        ct = self.load(vmid)
        out: list[dict[str, Any]] = []
        for name, snap in ct.snapshots.items():
            item: dict[str, Any] = {"name": name, "description": snap.get("description", ""),
                                    "snaptime": int(snap.get("snaptime", "0"))}
            for k in ("parent", "snapstate"):  # snapstate: snapshots in progress (§3.4)
                if k in snap:
                    item[k] = snap[k]
            out.append(item)
        cur: dict[str, Any] = {"name": "current", "description": "You are here!",
                               "digest": self.digest(ct),
                               "running": 1 if self.running(vmid) else 0}
        if "parent" in ct.conf:
            cur["parent"] = ct.conf["parent"]
        out.append(cur)
        return out

    # -- storage and network listings ---------------------------------------------------

    def network(self) -> list[dict[str, Any]]:
        """GET /nodes/{node}/network items (pve-manager PVE/API2/Network.pm, read from
        /etc/network/interfaces): vmbr0 VLAN-aware, vmbr1 not."""
        out = []
        for i, (name, _host) in enumerate(sorted(self.bridges.items())):
            item: dict[str, Any] = {
                "iface": name, "type": "bridge", "active": 1, "autostart": 1,
                "method": "manual", "method6": "manual", "families": ["inet"],
                "bridge_ports": "", "bridge_stp": "off", "bridge_fd": "0", "priority": i + 1}
            if name == "vmbr0":
                item["bridge_vlan_aware"] = 1
                item["bridge_vids"] = "2-4094"
            out.append(item)
        return out

    async def leftovers(self) -> list[str]:
        """What the node still holds: CTs, locks, CT volumes, running CTs and tasks (tests:
        "after every failure the stand-in holds no CT, volume, lock or running task")."""
        out = [f"CT {vmid}" + (f" (lock: {ct.conf['lock']})" if "lock" in ct.conf else "")
               for vmid, ct in sorted(self.cts.items())]
        out += [f"running CT {vmid}" for vmid in sorted(self.lxc.procs) if self.running(vmid)]
        out += [f"running task {t.upid}" for t in self.tasks.active()]
        for store in self.storages.values():
            out += [f"volume {item['volid']}" for item in store.content_list()
                    if item["content"] == "rootdir"]
        return out

    async def shutdown(self) -> None:
        await self.lxc.kill_all()
        await self.tasks.wait_all(timeout=15)
        for vmid in list(self.cts):  # matters when the lxcpath is shared (/var/lib/lxc)
            shutil.rmtree(self.lxc.ct_dir(vmid), ignore_errors=True)

    async def reboot(self, vmid: int, timeout: int | None, caller: Caller) -> str:
        """POST status/reboot (Status.pm vm_reboot; the "VM" is sic): shutdown, then start
        (PVE::LXC::vm_reboot)."""
        if not self.running(vmid):
            raise die(f"VM {vmid} not running")

        async def body(task: Task) -> None:
            async with self.flock(vmid):
                self.check_lock(self.load_task(vmid))
                await self.lxc.stop(vmid, kill=False, timeout=timeout or 60)
            await self._start_body(task, vmid, skiplock=False)
        return self.worker("vzreboot", vmid, caller, body)

    async def resources(self, rtype: str | None) -> list[dict[str, Any]]:
        """GET /cluster/resources (pve-manager PVE/API2/Cluster.pm resources). A node fills it
        from pvestatd's RRD data, ~10 s behind; the stand-in answers the current state."""
        out: list[dict[str, Any]] = []
        if rtype in (None, "vm"):
            for ct in list(self.cts.values()):
                st = await self.ct_status(ct)
                item = {"id": f"lxc/{ct.vmid}", "type": "lxc", "vmid": ct.vmid,
                        "node": self.name, "name": st["name"], "status": st["status"],
                        "maxmem": st["maxmem"], "maxdisk": st["maxdisk"],
                        "maxcpu": st["cpus"], "mem": st["mem"], "disk": st["disk"],
                        "cpu": st["cpu"], "uptime": st["uptime"],
                        "template": 1 if ct.conf.get("template") == "1" else 0,
                        "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0}
                for k in ("lock", "tags"):
                    if k in st:
                        item[k] = st[k]
                out.append(item)
        if rtype in (None, "node"):
            out.append({"id": f"node/{self.name}", "type": "node", "node": self.name,
                        "status": "online", "level": "", "maxcpu": os.cpu_count() or 1,
                        "cpu": 0, "uptime": 1})
        if rtype in (None, "storage"):
            for store in self.storages.values():
                st = store.status()
                out.append({"id": f"storage/{self.name}/{store.sid}", "type": "storage",
                            "storage": store.sid, "node": self.name, "status": "available",
                            "plugintype": store.type, "content": store.content,
                            "shared": 0, "disk": st["used"], "maxdisk": st["total"]})
        return out


def parse_pct_config(text: str) -> tuple[dict[str, str], list[tuple[str, str]],
                                         dict[str, dict[str, str]]]:
    """pve-container LXC/Config.pm parse_pct_config: ``#`` description lines (URL-encoded),
    ``key: value``, raw ``lxc.key: value`` or ``lxc.key = value``, ``[snapshot]`` sections;
    ``[pve:pending]`` is skipped (the stand-in keeps no pending changes)."""
    conf: dict[str, str] = {}
    lxc: list[tuple[str, str]] = []
    snaps: dict[str, dict[str, str]] = {}
    section: dict[str, str] | None = conf
    descr: dict[int, list[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        m = re.fullmatch(r"\[([a-z][a-z0-9_\-]+|pve:pending)\]\s*", line, re.I)
        if m:
            section = None if m.group(1) == "pve:pending" else snaps.setdefault(m.group(1), {})
            continue
        if section is None:
            continue
        if line.startswith("#"):
            descr.setdefault(id(section), []).append(urllib.parse.unquote(line[1:]))
            continue
        m = re.fullmatch(r"(lxc\.[a-z0-9_\-.]+)(?::|\s*=)\s*(.*?)\s*", line, re.I)
        if m:
            if section is conf:
                lxc.append((m.group(1), m.group(2)))
            continue
        m = re.fullmatch(r"([a-z][a-z_\-]*\d*):\s*(.*?)\s*", line)
        if m:
            section[m.group(1)] = m.group(2)
    for sec in [conf, *snaps.values()]:
        if id(sec) in descr:
            sec["description"] = "\n".join(descr[id(sec)])
    return conf, lxc, snaps


def classify_mountpoint(vol: str) -> str:
    """pve-container LXC/Config.pm classify_mountpoint."""
    if vol.startswith("/"):
        return "device" if vol.startswith("/dev/") else "bind"
    return "volume"


def shift_ids(root: Path, offset: int) -> None:
    """Add ``offset`` to every uid and gid under ``root`` (lchown: links stay links)."""
    def shift(p: str) -> None:
        st = os.lstat(p)
        os.lchown(p, st.st_uid + offset, st.st_gid + offset)
    for dirpath, dirnames, filenames in os.walk(root):
        shift(dirpath)  # each directory once, as its own walk step
        for name in filenames:
            shift(os.path.join(dirpath, name))
        for name in dirnames:  # links to directories are listed here but never walked
            if os.path.islink(os.path.join(dirpath, name)):
                shift(os.path.join(dirpath, name))
