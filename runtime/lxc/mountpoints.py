"""Mount points for the spec's mounts, masked and read-only paths, made before LXC runs.

LXC's ``create=dir|file`` (``man lxc.container.conf``, lxc.mount.entry) makes a mount point
with ``mkdir -p`` on the host path ``<lxc.rootfs.mount>/<target>``, following the image's
symlinks the host's way: an image holding ``evil -> /some/host/dir`` and a mount at
``/evil/mnt`` left ``/some/host/dir/mnt`` on the host (issue 12; LXC then refuses the mount
because its target holds a symlink). So every target is resolved here first, by
:mod:`runtime.lxc.rootpath`'s rule, in the order LXC will mount them:

- a target in the image (or in an earlier bind mount's source directory) is created here,
  inside that tree, and the mount entry names the resolved, symlink-free path, without
  ``create=``: LXC only mounts;
- a target below a filesystem that LXC mounts first (its /proc, /sys and autodev /dev, or an
  earlier tmpfs, mqueue… of the spec) cannot be made in advance; LXC still creates it with
  ``create=``, inside that new filesystem, which holds no symlink of the image's making;
- a target below another kind of earlier mount (a block device, an overlay) must exist: it is
  named resolved as far as it can be seen, with no ``create=``.

Like runc, a symlink in the image is followed *inside* the rootfs: ``/evil/mnt`` with
``evil -> /data`` mounts on the container's ``/data/mnt``.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errdefs import InvalidArgument
from runtime.lxc import rootpath
from runtime.lxc.rootpath import Layer

#: Filesystems that start empty: mount points below one may be made by LXC (``create=``).
FRESH_TYPES = frozenset({"tmpfs", "mqueue", "devpts", "proc", "sysfs", "cgroup", "cgroup2",
                         "ramfs", "securityfs", "debugfs", "tracefs", "hugetlbfs"})
#: What LXC has mounted when it reaches the mount entries: lxc.mount.auto's proc and sys
#: and lxc.autodev's tmpfs /dev (LXC 5 conf.c lxc_setup: automounts but cgroup, then
#: the entries, then the cgroup automount).
LXC_LAYERS = (Layer("/proc"), Layer("/sys"), Layer("/dev"))


@dataclass(frozen=True)
class Target:
    """Where LXC mounts: ``path`` (resolved, absolute, no symlinks), and ``create``: "dir" or
    "file" when LXC must make it (in a filesystem it mounted itself), else ""."""

    path: str
    create: str = ""


@dataclass(frozen=True)
class Plan:
    """Targets of ``mounts[i]`` by index, and the resolved paths of masked/read-only paths."""

    mounts: dict[int, Target] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)


def is_bind(m: dict[str, Any]) -> bool:
    options = m.get("options") or []
    return m.get("type") == "bind" or "bind" in options or "rbind" in options


def _layer(m: dict[str, Any], at: str) -> Layer:
    if is_bind(m):
        source = m.get("source", "")
        return Layer(at, source) if os.path.isdir(source) else Layer(at, fresh=False)
    return Layer(at, fresh=(m.get("type") or "") in FRESH_TYPES)


def _resolve(root_fd: int, path: str, layers: Iterable[Layer], what: str) -> rootpath.Resolved:
    try:
        return rootpath.resolve(root_fd, path, tuple(layers))
    except OSError as e:
        raise InvalidArgument(f"{what}: {path}: {e.strerror or e}") from None


def prepare(spec: dict[str, Any], rootfs: Path, provided: frozenset[str]) -> Plan:
    """Resolve (and where it is ours to do, create) every mount point of ``spec`` inside
    ``rootfs``; check the device paths the same way. ``provided`` are the destinations LXC
    mounts itself (skipped, as by the translation). Raises InvalidArgument naming the field:
    a loop, a file used as a directory, a mount onto the container's root."""
    plan = Plan()
    layers: list[Layer] = list(LXC_LAYERS)
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, m in enumerate(spec.get("mounts") or []):
            dest = posixpath.normpath(m["destination"])
            if dest in provided:
                continue
            what = f"mounts[{i}].destination"
            kind = "dir"
            if is_bind(m) and not os.path.isdir(m.get("source", "")):
                kind = "file"
            with _resolve(root_fd, dest, layers, what) as found:
                if found.path == "/":
                    raise InvalidArgument(f"{what}: {dest}: resolves to the container's root")
                if found.where == "missing":
                    try:
                        rootpath.make(found, kind)
                    except OSError as e:
                        raise InvalidArgument(f"{what}: {dest}: {e.strerror or e}") from None
                plan.mounts[i] = Target(found.path, kind if found.where == "fresh" else "")
            layers.append(_layer(m, found.path))
        linux = spec.get("linux") or {}
        for i, device in enumerate(linux.get("devices") or []):
            # Made by the autodev hook (rootpath.make_devices, inside the container's mount
            # namespace); checked here too, so a loop is a clear error before LXC runs.
            what = f"linux.devices[{i}].path"
            with _resolve(root_fd, device["path"], layers, what) as found:
                if found.path == "/":
                    raise InvalidArgument(f"{what}: {device['path']}: resolves to the "
                                          "container's root")
        for key in ("maskedPaths", "readonlyPaths"):
            for i, path in enumerate(linux.get(key) or []):
                what = f"linux.{key}[{i}]"
                with _resolve(root_fd, path, layers, what) as found:
                    if found.path == "/":
                        raise InvalidArgument(f"{what}: {path}: resolves to the container's "
                                              "root")
                    plan.paths[path] = found.path
    finally:
        os.close(root_fd)
    return plan
