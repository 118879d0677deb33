"""Where things live in the pool, and the user properties that mark them.

``<pool>/containers/<id>``  a container's root filesystem (a clone of an image, or of a
                            checkpoint when a task is restored)
``<pool>/images/<key>@base`` an image's merged lower layers, populated once
``<pool>/retained/<id>-<t>`` a deleted container's dataset kept because a Task-API checkpoint
                            (held by containerd) still refers to one of its snapshots
``<dataset>@checkpoint-<unix-seconds>`` a checkpoint (``-<n>`` added when taken in the same
                            second as another)
Pure.
"""

from __future__ import annotations

import re

from runtime.errdefs import InvalidArgument

CONTAINERS = "containers"
IMAGES = "images"
RETAINED = "retained"
BASE = "base"
CHECKPOINT_PREFIX = "checkpoint-"

#: User properties (zfs(8): a name with a colon). zfs-fuse (pool v23) stores them on
#: datasets and snapshots alike.
PROP_OWNER = "lxcri.proxmox.io:owner"  # image being populated by "<pid>:<starttime>"
PROP_SOURCE = "lxcri.proxmox.io:source"  # an image's lower layers, for operators
PROP_CONTAINER = "lxcri.proxmox.io:container"  # "<namespace>/<id>" of a container dataset
PROP_EXPORTED = "lxcri.proxmox.io:exported"  # on a snapshot: a Task-API checkpoint's token
PROP_CRIU = "lxcri.proxmox.io:criu"  # on a snapshot: path of its CRIU images

# zfs(8) component names: alphanumerics and "_-.:"; containerd ids are a subset
# (identifiers.Validate: alphanumerics separated by single "._-", at most 76 characters).
_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
_POOL = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,199}$")


def check_pool(pool: str) -> str:
    if not _POOL.match(pool) or "/" in pool:
        raise InvalidArgument(f"[storage] zfs_pool: {pool!r} is not a ZFS pool name")
    return pool


def check_component(value: str, what: str) -> str:
    if not _COMPONENT.match(value):
        raise InvalidArgument(f"{what}: {value!r} cannot be part of a ZFS dataset name "
                              "(letters, digits and _-.: only, starting with a letter or digit)")
    return value


def container_dataset(pool: str, id: str) -> str:
    return f"{pool}/{CONTAINERS}/{check_component(id, 'container id')}"


def image_dataset(pool: str, key: str) -> str:
    return f"{pool}/{IMAGES}/{key}"


def base_snapshot(pool: str, key: str) -> str:
    return f"{image_dataset(pool, key)}@{BASE}"


def checkpoint_snapshot(dataset: str, name: str) -> str:
    return f"{dataset}@{name}"


def checkpoint_name(seconds: int, n: int = 0) -> str:
    return f"{CHECKPOINT_PREFIX}{seconds}" + (f"-{n}" if n else "")


_CHECKPOINT = re.compile(r"^checkpoint-(\d+)(?:-(\d+))?$")


def checkpoint_order(name: str) -> tuple[int, int] | None:
    """(seconds, n) of a checkpoint snapshot name; None for other snapshots."""
    m = _CHECKPOINT.match(name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def check_checkpoint_name(name: str) -> str:
    name = name.rpartition("@")[2]
    if checkpoint_order(name) is None:
        raise InvalidArgument(f"snapshot {name!r}: not a checkpoint name "
                              "(checkpoint-<unix-seconds>[-n])")
    return name
