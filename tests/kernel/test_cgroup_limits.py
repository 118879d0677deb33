"""A container cannot raise its own cgroup limits on a pure cgroup v2 host (Proxmox VE 8/9 are;
this guest mounts only cgroup2), with containerd's default spec (no /sys/fs/cgroup mount) and
with CRI's read-only one (issue 12, item 5; the v1 case is in
tests/integration/test_rootfs_paths.py). Real LXC containers run by the project's LxcBackend.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from runtime.lxc import cgroup
from tests.kernel.v2world import NAMESPACES, World, v2_world

pytestmark = [pytest.mark.kernel, pytest.mark.pve9]

MEMORY, PIDS = 64 * 1024 * 1024, 64
#: Tries to lift both limits from inside and prints what it then reads.
RAISE = ("echo max 2>/dev/null >/sys/fs/cgroup/memory.max && echo raised-memory; "
         "echo max 2>/dev/null >/sys/fs/cgroup/pids.max && echo raised-pids; "
         "mkdir /sys/fs/cgroup/sub 2>/dev/null && echo made-child && rmdir /sys/fs/cgroup/sub; "
         "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max")


async def run(world: World, script: str, mounts: list[dict[str, Any]]) -> tuple[str, str, str]:
    """(what the container printed, the host's memory.max and pids.max of it), read while it
    still runs: it waits for a file the test makes once it has read them."""
    cid = f"lim{uuid.uuid4().hex[:8]}"
    out, done = world.rootfs / f"tmp/{cid}.out", world.rootfs / f"tmp/{cid}.done"
    wait = f"while [ ! -e /tmp/{cid}.done ]; do sleep 0.05; done"
    spec = World.spec(["sh", "-c", f"({script}) > /tmp/{cid}.tmp 2>&1; "
                                   f"mv /tmp/{cid}.tmp /tmp/{cid}.out; {wait}"],
                      namespaces=(*NAMESPACES, "cgroup"), mounts=mounts,
                      resources={"memory": {"limit": MEMORY}, "pids": {"limit": PIDS}})
    handle = await world.create(spec, cid)
    directory = cgroup.cgroup_dir(handle.pid, handle.name)
    assert directory is not None
    await handle.start()
    try:
        for _ in range(600):  # the container's script takes milliseconds; 30 s at most
            if out.exists():
                break
            await asyncio.sleep(0.05)
        return (out.read_text(), (directory / "memory.max").read_text().strip(),
                (directory / "pids.max").read_text().strip())
    finally:
        done.touch()
        assert await asyncio.wait_for(handle.wait(), 30) == 0


@pytest_asyncio.fixture
async def world() -> AsyncIterator[World]:
    async with v2_world("limt-") as w:
        yield w


CRI_CGROUP = {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}


@pytest.mark.asyncio
@pytest.mark.parametrize("mounts", [[], [CRI_CGROUP]], ids=["containerd-default", "cri-ro"])
async def test_a_container_cannot_raise_its_own_limits_on_cgroup2(
        world: World, mounts: list[dict[str, Any]]) -> None:
    printed, memory, pids = await run(world, RAISE, mounts)
    assert "raised" not in printed and "made-child" not in printed
    assert printed.split() == [str(MEMORY), str(PIDS)]  # it sees its limits, read-only
    assert (memory, pids) == (str(MEMORY), str(PIDS))  # and the host's are unchanged


@pytest.mark.asyncio
async def test_a_writable_cgroup_mount_delegates_the_containers_own_cgroup(world: World) -> None:
    rw = {**CRI_CGROUP, "options": ["nosuid", "noexec", "nodev", "rw"]}
    printed, memory, pids = await run(world, RAISE, [rw])
    # cgroup:mixed: the container may make child cgroups below its own (what a writable
    # cgroup mount is for: systemd inside), but on v2 LXC leaves its own cgroup's limit files
    # read-only (measured), so the host's limits hold even then.
    assert "made-child" in printed
    assert "raised" not in printed and (memory, pids) == (str(MEMORY), str(PIDS))
