"""The CT's rootfs: a linked clone of a template CT per image (O(1) per container on ZFS).

Why a template and linked clones: on a ``zfspool`` storage a linked clone is ``zfs clone
<pool>/basevol-<t>-disk-0@__base__ <pool>/subvol-<vmid>-disk-0`` (pve-storage
``ZFSPoolPlugin.pm`` → ``clone_image``), constant time and space whatever the image's size,
and the clone is a normal Proxmox volume: the UI shows it, snapshots and rollback work on it,
``DELETE /lxc/{vmid}`` frees it. Creating each CT from the image's tar instead (``ostemplate``)
unpacks the whole image every time (1.3 s for busybox on the stand-in, docs/proxmox.md §1);
a clone took 40 ms there. The other O(1) route, a ZFS clone made by us and attached as an
existing volume, needs root@pam and bypasses Proxmox's own volume bookkeeping.

The template of an image is made once per node, keyed like the ZFS image cache
(storage/): on the image's read-only layers, i.e. the ``lowerdir`` list of containerd's overlay
mount (a bundle without mounts is keyed on its rootfs path), plus privileged/unprivileged
(the template's files are id-shifted for an unprivileged CT, pve-container ``Create.pm``). It is
made from a tar of the image's root uploaded to ``template_storage`` as a ``vztmpl``, created
on ``storage`` and converted with ``POST …/template``. A node-wide file lock keeps two shims
from making the same template at once. Templates stay as the node's image cache (tag
``lxcri-image``) until runtime/proxmox/images.py removes unused ones (``[proxmox] image_keep``
after each new template, or ``proxmox-lxcri pve-images prune``); removing one that has clones
fails in Proxmox itself ("base volume … is still in use by linked cloned").
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from runtime import errdefs
from runtime.lxc.mount import mount_all, unmount_all
from runtime.proxmox import vmid as vmids
from runtime.proxmox.api import PveApi
from runtime.reaper import Reaper
from runtime.types import CreateConfig

log = logging.getLogger(__name__)
IMAGE_TAG = "lxcri-image"
LOCK_DIR = Path("/run/proxmox-lxcri/pve-images")


def image_key(config: CreateConfig, rootfs_dir: Path, unprivileged: bool) -> str:
    parts: list[str] = []
    for m in config.rootfs:
        for opt in m.options:
            if opt.startswith("lowerdir="):
                parts.append(opt)
    if not parts:
        parts = [str(rootfs_dir.resolve())]
    parts.append(f"unprivileged={int(unprivileged)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def template_name(key: str) -> str:
    return f"lxcri-img-{key}"


async def find_template(api: PveApi, name: str) -> int | None:
    items = await api.call("GET", "/nodes/{node}/lxc", read=True)
    for item in items or []:
        if (isinstance(item, dict) and item.get("name") == name
                and str(item.get("template", 0)) == "1"):
            return int(item["vmid"])
    return None


def lock_path(key: str) -> Path:
    """The node-wide lock of an image's template; its mtime is the template's last use on
    this node (runtime/proxmox/images.py keeps the most recently used ones)."""
    return LOCK_DIR / f"{key}.lock"


@contextlib.asynccontextmanager
async def _node_lock(key: str, how: int) -> AsyncIterator[int]:
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        # A cross-process lock (other shims of this node); taken in a thread so the loop runs.
        await asyncio.to_thread(fcntl.flock, fd, how)
        yield fd
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def template_for(api: PveApi, reaper: Reaper, config: CreateConfig, rootfs_dir: Path,
                       unprivileged: bool) -> AsyncIterator[int]:
    """The image's template CT, made if the node has none yet, held while the body clones it.

    Held: a shared lock on the image's node-wide lock file, which the template GC
    (runtime/proxmox/images.py) must take exclusively, without waiting, before it destroys a
    template; so a template found here is not destroyed before its clone has started (after
    that, Proxmox itself refuses: a clone locks its source, and a base volume with linked
    clones is not freed, pve-storage ``Storage.pm`` → ``vdisk_free``)."""
    key = image_key(config, rootfs_dir, unprivileged)
    name = template_name(key)
    async with _node_lock(key, fcntl.LOCK_SH) as fd:
        found = await find_template(api, name)
        if found is None:
            # Made under the exclusive lock (flock converts it), so two shims never make the
            # same one; then shared again for the clone.
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            found = await find_template(api, name)
            if found is None:
                found = await _make_template(api, reaper, config, rootfs_dir, unprivileged,
                                             name)
                await _prune_after_new(api, found)
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_SH)
        os.utime(fd)  # last use, for the keep policy
        yield found


async def _prune_after_new(api: PveApi, new: int) -> None:
    """The keep policy (``[proxmox] image_keep``), where the number of templates grows; a
    failure is logged, never the create's."""
    from runtime.proxmox import images

    try:
        removed = await images.prune(api, keep=api.settings.image_keep,
                                     exclude=frozenset({new}))
    except errdefs.ErrdefsError as exc:
        log.warning("removing unused image templates failed: %s", exc)
        return
    for t in removed:
        log.info("removed unused image template CT %d (%s)", t.vmid, t.name)


async def _make_template(api: PveApi, reaper: Reaper, config: CreateConfig, rootfs_dir: Path,
                         unprivileged: bool, name: str) -> int:
    s = api.settings
    started = time.monotonic()
    filename = f"{name}.tar"
    with tempfile.TemporaryDirectory(prefix="lxcri-pve-img-") as tmp:
        tar = Path(tmp) / filename
        await _tar_rootfs(reaper, config, rootfs_dir, Path(tmp), tar)
        upid = await api.upload("/nodes/{node}/storage/{storage}/upload",
                                storage=s.template_storage,
                                fields={"content": "vztmpl", "filename": filename},
                                file_field="filename", file=tar, filename=filename)
        await api.wait_task(upid, vmid=None, what=f"upload of image template {filename}")

    async def create(vmid: int) -> None:
        upid = await api.call("POST", "/nodes/{node}/lxc", vmid=vmid, params={
            "vmid": vmid, "ostemplate": f"{s.template_storage}:vztmpl/{filename}",
            "rootfs": f"{s.storage}:{s.rootfs_size}", "hostname": name,
            "unprivileged": unprivileged, "tags": IMAGE_TAG,
            "description": "proxmox-lxcri image template (containers are linked clones)"})
        await api.wait_task(upid, vmid=vmid, what="create of the image template")

    vmid, _ = await vmids.with_new_vmid(api, create)
    try:
        await api.call("POST", "/nodes/{node}/lxc/{vmid}/template", vmid=vmid)
        # It returns null, not the UPID (pve-container API2/LXC.pm → template): watch the
        # config for template: 1.
        deadline = time.monotonic() + s.task_timeout
        while True:
            conf = await api.call("GET", "/nodes/{node}/lxc/{vmid}/config", vmid=vmid,
                                  read=True)
            if str((conf or {}).get("template", 0)) == "1" and "lock" not in (conf or {}):
                break
            if time.monotonic() > deadline:
                raise errdefs.DeadlineExceeded(f"CT {vmid}: template conversion did not end")
            await asyncio.sleep(0.05)
    except BaseException:
        with contextlib.suppress(errdefs.ErrdefsError):
            await api.run("DELETE", "/nodes/{node}/lxc/{vmid}", vmid=vmid,
                          params={"purge": True, "destroy-unreferenced-disks": True})
        raise
    log.info("image template CT %d (%s) made in %.2fs", vmid, name, time.monotonic() - started)
    return vmid


async def _tar_rootfs(reaper: Reaper, config: CreateConfig, rootfs_dir: Path, tmp: Path,
                      tar: Path) -> None:
    """A tar of the image's root: containerd's mounts mounted in a private folder."""
    src = rootfs_dir
    mounts = []
    if config.rootfs:
        src = tmp / "root"
        src.mkdir()
        mounts = mount_all(config.rootfs, src)
    try:
        r = await reaper.run(["tar", "-C", str(src), "--numeric-owner", "-cf", str(tar), "."],
                             timeout=600)
        if r.returncode != 0:
            raise errdefs.Internal(f"tar of the image root {src} failed: "
                                   f"{r.stderr.decode(errors='replace').strip()}")
    finally:
        if mounts:
            unmount_all(mounts)
            shutil.rmtree(src, ignore_errors=True)
