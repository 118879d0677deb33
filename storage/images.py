"""Cached images: ``<pool>/images/<key>``, their size and users; pruning unused ones.

An image's users are the datasets cloned from its ``@base`` snapshot (containers, and retained
datasets of deleted containers). zfs-fuse has no ``clones`` property, so users are found from
every dataset's ``origin`` (one ``zfs get -r``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from runtime.errdefs import FailedPrecondition, NotFound
from storage import layout
from storage.driver import ZfsDriver

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageInfo:
    key: str
    dataset: str
    #: Bytes the image takes in the pool (dataset plus its @base snapshot).
    used: int
    #: Bytes of its content (what a full copy would take).
    referenced: int
    created: int
    source: str
    users: tuple[str, ...] = field(default_factory=tuple)
    #: False while another shim is still populating it (no @base yet).
    ready: bool = True


class ImageManager:
    def __init__(self, driver: ZfsDriver, pool: str) -> None:
        self.driver = driver
        self.pool = layout.check_pool(pool)

    async def scan(self) -> list[ImageInfo]:
        root = f"{self.pool}/{layout.IMAGES}"
        try:
            raw = await self.driver.get([self.pool], ["type", "origin", "used", "referenced",
                                                      "creation", layout.PROP_SOURCE],
                                        recursive=True)
        except NotFound:
            return []
        users: dict[str, list[str]] = {}
        for name, props in raw.items():
            origin = props.get("origin", "-")
            if origin != "-":
                users.setdefault(origin, []).append(name)
        images = []
        for name, props in raw.items():
            if not name.startswith(root + "/") or "@" in name or props.get("type") != "filesystem":
                continue
            base = f"{name}@{layout.BASE}"
            images.append(ImageInfo(
                key=name.rsplit("/", 1)[1],
                dataset=name,
                used=int(props.get("used", "0")),
                referenced=int(raw.get(base, props).get("referenced", "0")),
                created=int(props.get("creation", "0")),
                source=props.get(layout.PROP_SOURCE, "-"),
                users=tuple(sorted(users.get(base, []))),
                ready=base in raw,
            ))
        return sorted(images, key=lambda i: i.created)

    async def prune(self) -> list[ImageInfo]:
        """Destroy every ready image no dataset is cloned from; returns those destroyed. An
        image that gains a user meanwhile is kept (ZFS refuses: it has dependent clones)."""
        pruned = []
        for image in await self.scan():
            if image.users or not image.ready:
                continue
            try:
                await self.driver.destroy(image.dataset, snapshots=True)
            except FailedPrecondition as exc:
                log.info("image %s gained a user, kept: %s", image.key, exc)
                continue
            except NotFound:
                continue
            pruned.append(image)
        return pruned
