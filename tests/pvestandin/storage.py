"""The node's storages: ``local`` (a directory) and ``local-zfs`` (a zfspool).

What a PVE 9 node has after installation on ZFS (pve-docs ``pvesm.adoc``; pve-storage
``src/PVE/Storage/DirPlugin.pm`` and ``ZFSPoolPlugin.pm``):

* ``local``: type ``dir``, path ``/var/lib/vz``; templates under ``template/cache``, so
  ``local:vztmpl/<file>`` is ``<path>/template/cache/<file>``. Container volumes on a dir
  storage are ``<vmid>/subvol-<vmid>-disk-<n>.subvol`` directories when the size is 0; a size
  makes a raw ext4 image, which the stand-in does not do (it answers with a task error).
* ``local-zfs``: type ``zfspool``, ``pool rpool/data``, content ``images,rootdir``. A CT
  volume is the dataset ``<pool>/subvol-<vmid>-disk-<n>`` with ``refquota`` = size (none for
  size 0), mounted at its default mountpoint (``ZFSPoolPlugin.pm`` ``alloc_image`` /
  ``zfs_create_subvol``); ``local-zfs:subvol-<vmid>-disk-<n>`` is its volume id.

Here ``local`` is a folder of the stand-in and ``local-zfs`` a dataset of a zfs-fuse pool
(environment.md section 3): the ``zfs`` CLI is the same as OpenZFS's for what is used here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tests.pvestandin.tasks import TaskFailed


async def run(*argv: str, timeout: float = 120) -> str:
    """Run a tool; its stderr becomes the TaskFailed text, as PVE's run_command does."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise TaskFailed(f"command '{' '.join(argv)}' failed: got timeout") from None
    if proc.returncode != 0:
        # pve-common PVE/Tools.pm run_command: "command '<cmd>' failed: exit code <n>"
        text = err.decode(errors="replace").strip()
        raise TaskFailed(f"command '{' '.join(argv)}' failed: exit code {proc.returncode}"
                         + (f"\n{text}" if text else ""))
    return out.decode(errors="replace")


#: Volume names the stand-in's plugins make and accept (pve-storage parse_volname).
DIR_VOLNAME = re.compile(r"(\d+)/subvol-\1-disk-\d+\.subvol")
ZFS_VOLNAME = re.compile(r"(?:(basevol-\d+-disk-\d+)/)?((?:subvol|basevol)-\d+-disk-\d+)")


@dataclass
class Volume:
    storage: str
    name: str           # volume name within the storage, e.g. subvol-100-disk-0
    path: Path          # where its files are (the mountpoint for ZFS)
    size: int           # bytes; 0 = no quota

    @property
    def volid(self) -> str:
        return f"{self.storage}:{self.name}"


class DirStorage:
    """``local``: templates and size-0 subvolume directories."""

    type = "dir"
    content = "backup,iso,vztmpl,rootdir,images,snippets"

    def __init__(self, sid: str, path: Path) -> None:
        self.sid = sid
        self.path = path
        self.template_dir = path / "template" / "cache"
        self.template_dir.mkdir(parents=True, exist_ok=True)
        (path / "images").mkdir(parents=True, exist_ok=True)

    def template_path(self, volname: str) -> Path | None:
        m = re.fullmatch(r"vztmpl/([^/]+)", volname)
        return self.template_dir / m.group(1) if m else None

    async def alloc(self, vmid: int, size: int, index: int) -> Volume:
        if size:
            raise TaskFailed(f"storage '{self.sid}': raw CT images (size {size}) are not "
                             "implemented by the stand-in; use size 0 or a zfspool storage")
        name = f"{vmid}/subvol-{vmid}-disk-{index}.subvol"
        path = self.path / "images" / name
        path.mkdir(parents=True)
        return Volume(self.sid, name, path, 0)

    def volume(self, name: str) -> Volume | None:
        # Only names this plugin makes (DirPlugin/Plugin.pm parse_volname): a name from a
        # request must not reach outside the storage ("local:../../..").
        if not DIR_VOLNAME.fullmatch(name):
            return None
        path = self.path / "images" / name
        return Volume(self.sid, name, path, 0) if path.is_dir() else None

    async def free(self, name: str) -> None:
        if not DIR_VOLNAME.fullmatch(name):
            raise TaskFailed(f"unable to parse directory volume name '{name}'")
        path = self.path / "images" / name
        shutil.rmtree(path, ignore_errors=True)
        with_parent = path.parent
        if with_parent != self.path / "images" and not any(with_parent.iterdir()):
            with_parent.rmdir()

    def content_list(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for f in sorted(self.template_dir.iterdir()):
            st = f.stat()
            out.append({"volid": f"{self.sid}:vztmpl/{f.name}", "content": "vztmpl",
                        "format": _tmpl_format(f.name), "size": st.st_size,
                        "ctime": int(st.st_mtime)})
        for d in sorted((self.path / "images").glob("*/subvol-*.subvol")):
            vmid = int(d.parent.name)
            out.append({"volid": f"{self.sid}:{d.parent.name}/{d.name}", "content": "rootdir",
                        "format": "subvol", "size": 0, "vmid": vmid,
                        "ctime": int(d.stat().st_mtime)})
        return out

    def status(self) -> dict[str, object]:
        st = os.statvfs(self.path)
        total, avail = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        return _status(self.sid, self.type, self.content, total, total - avail, avail)


def _tmpl_format(name: str) -> str:
    m = re.search(r"\.(tar\.(gz|xz|zst|bz2)|tar|tgz)$", name)
    return m.group(1) if m else "raw"


def _status(sid: str, typ: str, content: str, total: int, used: int, avail: int
            ) -> dict[str, object]:
    return {"storage": sid, "type": typ, "content": content, "active": 1, "enabled": 1,
            "shared": 0, "total": total, "used": used, "avail": avail,
            "used_fraction": (used / total) if total else 0}


class ZfsPoolStorage:
    """``local-zfs``: one dataset per CT volume, under ``pool`` (a zfs-fuse dataset here).

    Volume names (pve-storage ``ZFSPoolPlugin.pm`` ``parse_volname``): ``subvol-<vmid>-disk-<n>``;
    a template's ``basevol-<vmid>-disk-<n>`` (``create_base``: rename, then snapshot
    ``@__base__``); a linked clone's ``basevol-<b>-disk-<n>/subvol-<vmid>-disk-<m>``
    (``clone_image``: ``zfs clone …@__base__`` with the base's refquota). The dataset is always
    the last part.
    """

    type = "zfspool"
    content = "images,rootdir"

    def __init__(self, sid: str, pool: str) -> None:
        self.sid = sid
        self.pool = pool

    def dataset(self, name: str) -> str | None:
        m = ZFS_VOLNAME.fullmatch(name)
        return f"{self.pool}/{m.group(2)}" if m else None

    def _ds(self, name: str) -> str:
        ds = self.dataset(name)
        if ds is None:
            raise TaskFailed(f"unable to parse zfs volume name '{name}'")
        return ds

    async def alloc(self, vmid: int, size: int, index: int) -> Volume:
        name = self._free_name(vmid, index)
        argv = ["zfs", "create"]
        if size:
            # ZFSPoolPlugin.pm zfs_create_subvol: refquota = size (in KiB there; bytes here).
            argv += ["-o", f"refquota={size}"]
        await run(*argv, f"{self.pool}/{name}")
        vol = self.volume(name)
        if vol is None:
            raise TaskFailed(f"zfs dataset '{self.pool}/{name}' did not appear")
        # Datasets are created mode 0755 root; PVE does no chmod either.
        return vol

    def _free_name(self, vmid: int, index: int) -> str:
        """Plugin.pm find_free_diskname: the first unused disk number (from ``index``)."""
        taken = set(self._datasets())
        n = index
        while (f"{self.pool}/subvol-{vmid}-disk-{n}" in taken
               or f"{self.pool}/basevol-{vmid}-disk-{n}" in taken):
            n += 1
        return f"subvol-{vmid}-disk-{n}"

    def _datasets(self) -> list[str]:
        import subprocess
        r = subprocess.run(["zfs", "list", "-H", "-o", "name", "-r", self.pool],
                           capture_output=True, text=True, timeout=30)
        return r.stdout.split()

    def volume(self, name: str) -> Volume | None:
        ds = self.dataset(name)
        if ds is None:
            return None
        mnt = self._get(ds, "mountpoint")
        if mnt is None:
            return None
        quota = self._get(ds, "refquota")
        size = int(quota) if quota and quota.isdigit() else 0
        return Volume(self.sid, name, Path(mnt), size)

    def _get(self, ds: str, prop: str) -> str | None:
        import subprocess  # sync: only ever a few ms, called from handlers (zfs get)
        r = subprocess.run(["zfs", "get", "-H", "-p", "-o", "value", prop, ds],
                           capture_output=True, text=True, timeout=30)
        return r.stdout.strip() if r.returncode == 0 else None

    async def free(self, name: str) -> None:
        ds = self._ds(name)
        if "/basevol-" in "/" + ds.rsplit("/", 1)[1]:
            # pve-storage Storage.pm vdisk_free: a base with linked clones stays.
            base = f"{ds}@__base__"
            if any(self._get(other, "origin") == base for other in self._datasets()):
                raise TaskFailed(f"base volume '{name}' is still in use by linked cloned")
        # zfs-fuse answers "dataset is busy" for a while after a CT used the dataset (the
        # FUSE mount still has users; environment.md section 3): unmount, retry, up to ~10 s.
        for attempt in range(20):
            if self._get(ds, "type") is None:
                return
            if self._get(ds, "mounted") == "yes":
                with contextlib.suppress(TaskFailed):
                    await run("zfs", "umount", "-f", ds)
            try:
                await run("zfs", "destroy", "-r", ds)
                return
            except TaskFailed:
                if attempt == 19:
                    raise
                await asyncio.sleep(0.5)

    async def create_base(self, name: str) -> str:
        """ZFSPoolPlugin.pm create_base: subvol-… becomes basevol-…, snapshot @__base__."""
        m = ZFS_VOLNAME.fullmatch(name)
        if m is None or m.group(1) or not m.group(2).startswith("subvol-"):
            raise TaskFailed("create_base not possible with base image")
        newname = "basevol-" + m.group(2)[len("subvol-"):]
        old, new = f"{self.pool}/{m.group(2)}", f"{self.pool}/{newname}"
        # zfs-fuse: a rename remounts, and a recently used FUSE mount is "busy" for a while
        # (see free): unmount first, retry, mount again.
        for attempt in range(20):
            with contextlib.suppress(TaskFailed):
                if self._get(old, "mounted") == "yes":
                    await run("zfs", "umount", "-f", old)
            try:
                await run("zfs", "rename", old, new)
                break
            except TaskFailed:
                if attempt == 19:
                    raise
                await asyncio.sleep(0.5)
        if self._get(new, "mounted") != "yes":
            await run("zfs", "mount", new)
        await run("zfs", "snapshot", f"{new}@__base__")
        return newname

    async def clone(self, name: str, vmid: int, index: int) -> str:
        """ZFSPoolPlugin.pm clone_image: a linked clone of a base, with its refquota."""
        m = ZFS_VOLNAME.fullmatch(name)
        if m is None or m.group(1) or not m.group(2).startswith("basevol-"):
            raise TaskFailed("clone_image only works on base images")
        base = f"{self.pool}/{m.group(2)}"
        size = self._get(base, "refquota") or "0"
        newname = self._free_name(vmid, index)
        argv = ["zfs", "clone"]
        if size not in ("0", "none", "-"):
            argv += ["-o", f"refquota={size}"]
        await run(*argv, f"{base}@__base__", f"{self.pool}/{newname}")
        return f"{m.group(2)}/{newname}"

    async def snapshot(self, name: str, snap: str) -> None:
        await run("zfs", "snapshot", f"{self._ds(name)}@{snap}")

    async def delete_snapshot(self, name: str, snap: str) -> None:
        await run("zfs", "destroy", f"{self._ds(name)}@{snap}")

    async def rollback_possible(self, name: str, snap: str) -> None:
        """ZFSPoolPlugin.pm volume_rollback_is_possible: only to the most recent snapshot."""
        snaps = await self.snapshots(name)
        if snap not in snaps:
            raise TaskFailed(f"snapshot '{snap}' does not exist")
        if snaps[-1] != snap:
            raise TaskFailed(f"can't rollback, '{snap}' is not most recent snapshot on "
                             f"'{self.sid}:{name}'")

    async def rollback(self, name: str, snap: str) -> None:
        await self.rollback_possible(name, snap)
        await run("zfs", "rollback", f"{self._ds(name)}@{snap}")

    async def snapshots(self, name: str) -> list[str]:
        out = await run("zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r",
                        self._ds(name))
        # zfs-fuse lacks `-s createtxg`; `zfs list` lists a dataset's snapshots oldest first.
        return [line.split("@", 1)[1] for line in out.split() if "@" in line]

    def content_list(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for ds in self._datasets():
            m = re.fullmatch(re.escape(self.pool) + r"/(subvol|basevol)-(\d+)-disk-\d+", ds)
            if not m:
                continue
            name = ds.split("/")[-1]
            origin = self._get(ds, "origin") or ""
            om = re.fullmatch(re.escape(self.pool) + r"/(basevol-\d+-disk-\d+)@__base__",
                              origin)
            if om:
                name = f"{om.group(1)}/{name}"
            vol = self.volume(name)
            out.append({"volid": f"{self.sid}:{name}", "content": "rootdir", "format": "subvol",
                        "size": vol.size if vol else 0, "vmid": int(m.group(2)),
                        "ctime": int(time.time())})
        return out

    def status(self) -> dict[str, object]:
        used = self._get(self.pool, "used")
        avail = self._get(self.pool, "available")
        u = int(used) if used and used.isdigit() else 0
        a = int(avail) if avail and avail.isdigit() else 0
        return _status(self.sid, self.type, self.content, u + a, u, a)
