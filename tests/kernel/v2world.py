"""A pure-cgroup-v2 test world for kernel tests: a reaper, an LXC backend under a temp folder,
a busybox rootfs, and every container and mount removed afterwards (even on failure)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from runtime.lxc.backend import LxcBackend, LxcContainer
from runtime.lxc.mount import mounted_under, unmount
from runtime.reaper import Reaper
from runtime.types import CreateConfig, Mount
from tests.harness.rootfs import populate_busybox_rootfs

NAMESPACES = ("pid", "ipc", "uts", "mount", "network")


class World:
    def __init__(self, base: Path, backend: LxcBackend) -> None:
        self.base = base
        self.backend = backend
        self.handles: list[LxcContainer] = []
        self.rootfs = base / "busybox"
        populate_busybox_rootfs(self.rootfs)

    @staticmethod
    def spec(args: list[str], *, namespaces: tuple[str, ...] = NAMESPACES,
             mounts: list[dict[str, Any]] | None = None, **linux: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "ociVersion": "1.0.2",
            "process": {"args": args, "env": ["PATH=/bin:/sbin:/usr/bin"], "cwd": "/",
                        "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": t} for t in namespaces], **linux},
        }
        if mounts is not None:
            spec["mounts"] = mounts
        return spec

    async def create(self, spec: dict[str, Any], cid: str | None = None) -> LxcContainer:
        """Created, not started (the OCI "created" state)."""
        cid = cid or f"v2{uuid.uuid4().hex[:8]}"
        bundle = self.base / cid
        bundle.mkdir()
        config = CreateConfig(id=cid, namespace="k", bundle=bundle, spec=spec,
                              rootfs=(Mount("bind", str(self.rootfs), "", ("rbind", "rw")),),
                              state_dir=self.base / f"{cid}-state")
        handle = await self.backend.create(config)
        self.handles.append(handle)
        return handle

    async def run(self, args: list[str], **linux: Any) -> LxcContainer:
        handle = await self.create(self.spec(args, **linux))
        await handle.start()
        return handle


@contextlib.asynccontextmanager
async def v2_world(prefix: str) -> AsyncIterator[World]:
    if not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        pytest.fail("the kernel test host should mount a pure cgroup2 hierarchy")
    reaper = Reaper()
    reaper.install(asyncio.get_running_loop(), subreaper=False)
    base = Path(tempfile.mkdtemp(prefix=prefix))
    w = World(base, LxcBackend(reaper, base / "lxc"))
    try:
        yield w
    finally:
        for h in w.handles:
            with contextlib.suppress(Exception):
                await h.delete()
        for point in reversed(mounted_under(base)):
            unmount(point)
        reaper.uninstall()
        shutil.rmtree(base, ignore_errors=True)
