"""``linux.resources.unified`` on a pure cgroup v2 host (Proxmox VE 8/9 are; this VM's guest
mounts only cgroup2), issue 12: keys are applied to the container's own cgroup, a multi-line
value is written line by line (as runc does), and a key that would end the LXC config line is
refused before anything is made, its injected hook never run."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from runtime import cgroups, errdefs
from runtime.lxc.mount import mounted_under
from tests.kernel.v2world import World, v2_world

pytestmark = [pytest.mark.kernel, pytest.mark.pve9]


@pytest_asyncio.fixture
async def world() -> AsyncIterator[World]:
    async with v2_world("u2t-") as w:
        yield w


@pytest.mark.asyncio
async def test_unified_keys_reach_the_containers_cgroup_line_by_line(world: World) -> None:
    unified = {"pids.max": "9", "memory.high": "max\n60000000\n"}
    h = await world.run(["sleep", "60"], resources={"unified": unified})
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
        await world.run(["sleep", "60"], resources={"unified": {
            f"memory.max\nlxc.hook.pre-start = /bin/touch {marker}": "1"}})
    assert not marker.exists()
    lxc = world.base / "lxc"
    assert not lxc.exists() or list(lxc.iterdir()) == []
    assert mounted_under(world.base) == []
