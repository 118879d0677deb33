"""What a child of the daemon's reaper inherits: the OOM score the daemon gives its children (the
daemon's own stays lower) and the umask asked for, now that spawning needs no ``preexec_fn``
(runtime/reaper.py). Real processes; raising one's own OOM score needs no privilege."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from runtime.reaper import Reaper


def own_score() -> int:
    return int(Path("/proc/self/oom_score_adj").read_text())


async def child_output(reaper: Reaper, argv: list[str], *, umask: int | None = None) -> str:
    read, write = os.pipe()
    try:
        child = reaper.spawn(argv, stdout=write, umask=umask)
    finally:
        os.close(write)
    with os.fdopen(read, "rb") as f:
        out = await asyncio.to_thread(f.read)
    assert await child.wait() == 0
    return out.decode()


@pytest.mark.asyncio
async def test_child_gets_the_childrens_oom_score_and_the_daemon_keeps_its_own() -> None:
    before = own_score()
    target = min(before + 7, 1000)  # above our own: allowed without privilege
    reaper = Reaper(child_oom_score_adj=target)
    reaper.install(asyncio.get_running_loop(), subreaper=False)
    try:
        out = await child_output(reaper, ["cat", "/proc/self/oom_score_adj"])
    finally:
        reaper.uninstall()
    assert int(out) == target
    assert own_score() == before


@pytest.mark.asyncio
async def test_child_gets_the_umask_asked_for() -> None:
    reaper = Reaper()
    reaper.install(asyncio.get_running_loop(), subreaper=False)
    old = os.umask(0o022)
    os.umask(old)
    try:
        out = await child_output(reaper, ["sh", "-c", "umask"], umask=0o077)
        default = await child_output(reaper, ["sh", "-c", "umask"])
    finally:
        reaper.uninstall()
    assert int(out, 8) == 0o077
    assert int(default, 8) == old
