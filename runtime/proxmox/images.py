"""The node's image templates (CTs tagged ``lxcri-image``, runtime/proxmox/rootfs.py): which
CTs are linked to each, and removing the ones no CT is linked to any more.

containerd removes an image without telling any shim, so "unused" is what Proxmox shows: a
template with no linked clone on its storage. A linked clone's volume names its base
(``<storage>:basevol-<template>-disk-<n>/subvol-<vmid>-disk-<m>``, pve-storage
``ZFSPoolPlugin.pm`` → ``parse_volname``), so one ``GET …/storage/{storage}/content`` per
storage shows every template's clones. Proxmox itself refuses to free a base volume that still
has linked clones (pve-storage ``Storage.pm`` → ``vdisk_free``: ``base volume '<volname>' is
still in use by linked cloned``; the template's destroy task fails and its config stays), so a
clone made between the look and the destroy is safe; one about to be made is protected by the
image's node-wide lock (rootfs.template_for holds it shared across the clone; :func:`prune`
takes it exclusively, without waiting, and skips a template whose lock is busy).

When: :func:`prune` runs after each new template (the only point where the number of
templates grows), keeping the ``[proxmox] image_keep`` most recently used unused ones (last
use: the mtime of the image's lock file, touched at every clone on this node; else the
template's volume ``ctime``); ``proxmox-lxcri pve-images prune`` runs it by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from dataclasses import dataclass, field

from runtime import errdefs
from runtime.proxmox import rootfs
from runtime.proxmox.api import PveApi

log = logging.getLogger(__name__)
_BASE = re.compile(r"^basevol-(\d+)-disk-\d+/")
_STORAGE_ID = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$", re.I)


@dataclass
class ImageTemplate:
    vmid: int
    name: str
    storage: str
    #: VMIDs of the CTs linked to it.
    clones: list[int] = field(default_factory=list)
    #: Seconds since the epoch: the last clone on this node, else the volume's ctime.
    last_used: float = 0.0

    @property
    def key(self) -> str:
        return self.name.removeprefix("lxcri-img-")


async def scan(api: PveApi) -> list[ImageTemplate]:
    """The node's image templates with their linked clones, most recently used first."""
    items = await api.call("GET", "/nodes/{node}/lxc", read=True)
    found: dict[int, ImageTemplate] = {}
    for item in items or []:
        if not isinstance(item, dict) or str(item.get("template", 0)) != "1":
            continue
        name = str(item.get("name", ""))
        tags = str(item.get("tags", "")).replace(",", ";").split(";")
        if rootfs.IMAGE_TAG not in tags or not re.fullmatch(r"lxcri-img-[0-9a-f]{1,64}", name):
            continue  # an operator's template: never ours to remove
        if not str(item.get("vmid", "")).isdigit():
            continue
        vmid = int(item["vmid"])
        conf = await api.call("GET", "/nodes/{node}/lxc/{vmid}/config", vmid=vmid, read=True)
        storage = str((conf or {}).get("rootfs", "")).split(":", 1)[0]
        if _STORAGE_ID.match(storage):
            found[vmid] = ImageTemplate(vmid, name, storage)
    for storage in sorted({t.storage for t in found.values()}):
        content = await api.call("GET", "/nodes/{node}/storage/{storage}/content",
                                 storage=storage, read=True)
        for vol in content or []:
            if not isinstance(vol, dict):
                continue
            volname = str(vol.get("volid", "")).split(":", 1)[-1]
            m = _BASE.match(volname)
            if m and int(m.group(1)) in found and str(vol.get("vmid", "")).isdigit():
                found[int(m.group(1))].clones.append(int(vol["vmid"]))
            elif volname.startswith("basevol-") and str(vol.get("vmid", "")).isdigit():
                t = found.get(int(vol["vmid"]))
                if t is not None:
                    ctime = str(vol.get("ctime") or 0)
                    if ctime.isdigit():
                        t.last_used = max(t.last_used, float(ctime))
    for t in found.values():
        with contextlib.suppress(OSError):
            t.last_used = max(t.last_used, os.stat(rootfs.lock_path(t.key)).st_mtime)
    return sorted(found.values(), key=lambda t: -t.last_used)


async def prune(api: PveApi, keep: int = 0,
                exclude: frozenset[int] = frozenset()) -> list[ImageTemplate]:
    """Destroy the unused image templates beyond the ``keep`` most recently used unused ones;
    returns those destroyed. A template whose lock is held (a clone is being made) or that
    Proxmox still finds in use is skipped."""
    unused = [t for t in await scan(api) if not t.clones and t.vmid not in exclude]
    removed = []
    for t in unused[keep:]:
        rootfs.LOCK_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(rootfs.lock_path(t.key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a shim is cloning it right now
            try:
                await api.run("DELETE", "/nodes/{node}/lxc/{vmid}", vmid=t.vmid,
                              what=f"destroy of unused image template {t.name}",
                              params={"purge": True, "destroy-unreferenced-disks": True})
            except errdefs.NotFound:
                pass
            except (errdefs.Internal, errdefs.FailedPrecondition) as exc:
                if "still in use" in str(exc) or "locked" in str(exc):
                    continue  # cloned meanwhile (by another node's shim): it stays
                raise
            # The lock file stays: unlinked, a shim waiting on it and one opening it anew
            # would hold two different locks for one image.
            removed.append(t)
        finally:
            os.close(fd)
    return removed
