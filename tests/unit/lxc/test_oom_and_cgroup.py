"""One OOM event per kill from the v1 notification + counter logic, and the payload guard."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime.lxc import cgroup, oom


def _control(path: Path, kills: int) -> None:
    path.write_text(f"oom_kill_disable 0\nunder_oom 0\noom_kill {kills}\n")


@pytest.mark.asyncio
async def test_a_notification_is_reported_once_the_counter_moves(tmp_path: Path) -> None:
    control = tmp_path / "memory.oom_control"
    _control(control, 0)
    hits: list[int] = []
    watch = oom.OomWatch(lambda: hits.append(1))

    async def kill_later() -> None:
        await asyncio.sleep(0.03)  # the kernel counts the kill after notifying
        _control(control, 1)

    killer = asyncio.create_task(kill_later())
    seen, gone = await watch._follow(control, 0)
    await killer
    assert (hits, seen, gone) == ([1], 1, False)
    # The dying victim's tail of notifications: nothing new is counted, nothing reported.
    oom.FOLLOW, old = 0.05, oom.FOLLOW
    try:
        assert await watch._follow(control, seen) == (1, False)
    finally:
        oom.FOLLOW = old
    assert hits == [1]
    # ... and when the cgroup then goes, that tail is not taken for another kill.
    control.unlink()
    assert await watch._follow(control, seen) == (1, True)
    assert hits == [1]


@pytest.mark.asyncio
async def test_a_cgroup_gone_before_the_count_counts_one_kill(tmp_path: Path) -> None:
    hits: list[int] = []
    watch = oom.OomWatch(lambda: hits.append(1))
    assert await watch._follow(tmp_path / "memory.oom_control", 0) == (0, True)
    assert hits == [1]


def test_payload_guard() -> None:
    assert cgroup.payload("default-c1") == "lxc.payload.default-c1"
    assert cgroup.payload("default-c1", "/kubepods/pod1/c1") == "kubepods/pod1/c1"
    assert cgroup.is_payload("/kubepods/pod1/c1", "x", "kubepods/pod1/c1")
    assert cgroup.is_payload("/kubepods/pod1/c1/sub", "x", "kubepods/pod1/c1")
    # The pod's own cgroup, or a sibling with a common prefix, is not the container's.
    assert not cgroup.is_payload("/kubepods/pod1", "x", "kubepods/pod1/c1")
    assert not cgroup.is_payload("/kubepods/pod1/c10", "x", "kubepods/pod1/c1")
    assert cgroup.is_payload("/lxc.payload.x", "x")
    assert not cgroup.is_payload("/", "x")
