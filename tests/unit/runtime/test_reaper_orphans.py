"""The reaper keeps the exit status of an orphan it reaped as the subreaper, for the one who
asks (a CRIU-restored program, whose parent, LXC's restore monitor, never reaps it and exits
first: runtime.lxc.restore). Run in a child interpreter: becoming a subreaper would make the
test runner the parent of every later orphan."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

def run(script: str) -> str:
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=30, check=True).stdout


def test_an_orphans_status_is_kept_once_for_whoever_asks() -> None:
    out = run(r"""
import asyncio, os, subprocess
from runtime.reaper import Reaper

async def main():
    reaper = Reaper()
    reaper.install(asyncio.get_running_loop(), subreaper=True)
    r, w = os.pipe()
    # The shell prints its child's PID and exits; the child, orphaned, comes back to this
    # process (the subreaper) and exits 7 a moment later.
    parent = reaper.spawn(["sh", "-c", "(sleep 0.3; exit 7) & echo $!"], stdout=w)
    os.close(w)
    await parent.wait()
    pid = int(os.read(r, 64))
    assert reaper.orphan_status(pid) is None  # still running
    while (status := reaper.orphan_status(pid)) is None:
        await asyncio.sleep(0.05)
    print(status, reaper.orphan_status(pid))

asyncio.run(main())
""")
    assert out == "7 None\n"
