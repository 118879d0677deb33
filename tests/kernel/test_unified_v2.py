"""``linux.resources.unified`` on a pure cgroup v2 host (Proxmox VE 8/9 are; this VM's guest
mounts only cgroup2), issue 12: keys are applied to the container's own cgroup, a multi-line
value is written line by line (as runc does), and a key that would end the LXC config line is
refused before anything is made, its injected hook never run."""

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
import pytest_asyncio

from runtime import cgroups, errdefs
from runtime.lxc.backend import LxcBackend, LxcContainer
from runtime.lxc.mount import mounted_under, unmount
from runtime.reaper import Reaper
from runtime.types import CreateConfig, Mount
from tests.harness.rootfs import populate_busybox_rootfs

pytestmark = [pytest.mark.kernel, pytest.mark.pve9]


class World:
    def __init__(self, base: Path, backend: LxcBackend) -> None:
        self.base = base
        self.backend = backend
        self.handles: list[LxcContainer] = []
        self.rootfs = base / "busybox"
        populate_busybox_rootfs(self.rootfs)

    async def create(self, unified: dict[str, str]) -> LxcContainer:
        spec: dict[str, Any] = {
            "ociVersion": "1.0.2",
            "process": {"args": ["sleep", "60"], "env": ["PATH=/bin:/sbin:/usr/bin"],
                        "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount",
                                                            "network")],
                      "resources": {"unified": unified}},
        }
        cid = f"u2{uuid.uuid4().hex[:8]}"
        bundle = self.base / cid
        bundle.mkdir()
        config = CreateConfig(id=cid, namespace="k", bundle=bundle, spec=spec,
                              rootfs=(Mount("bind", str(self.rootfs), "", ("rbind", "rw")),),
                              state_dir=self.base / f"{cid}-state")
        handle = await self.backend.create(config)
        self.handles.append(handle)
        await handle.start()
        return handle


@pytest_asyncio.fixture
async def world() -> AsyncIterator[World]:
    if not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        pytest.fail("the kernel test host should mount a pure cgroup2 hierarchy")
    reaper = Reaper()
    reaper.install(asyncio.get_running_loop(), subreaper=False)
    base = Path(tempfile.mkdtemp(prefix="u2t-"))
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


@pytest.mark.asyncio
async def test_unified_keys_reach_the_containers_cgroup_line_by_line(world: World) -> None:
    h = await world.create({"pids.max": "9", "memory.high": "max\n60000000\n"})
    v2 = cgroups.of_pid(h.pid).v2
    assert v2 is not None
    assert (v2 / "pids.max").read_text().strip() == "9"
    # Two writes, in order: the last one is what the file holds (runc's WriteFileByLine).
    high = (v2 / "memory.high").read_text().strip()
    assert high != "max" and abs(int(high) - 60000000) < 4096, high  # rounded to pages


@pytest.mark.asyncio
async def test_a_unified_key_with_a_line_break_runs_no_hook(world: World) -> None:
    marker = world.base / "pwned"
    with pytest.raises(errdefs.InvalidArgument, match=r'^linux\.resources\.unified\["memory'):
        await world.create({f"memory.max\nlxc.hook.pre-start = /bin/touch {marker}": "1"})
    assert not marker.exists()
    lxc = world.base / "lxc"
    assert not lxc.exists() or list(lxc.iterdir()) == []
    assert mounted_under(world.base) == []
