"""CRIU: `criu check`, and an LXC container's counter survives checkpoint and restore."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.kernel.helpers import COUNTER_SCRIPT, make_container, sh, unique

pytestmark = [pytest.mark.kernel, pytest.mark.pve9]

COUNTER = COUNTER_SCRIPT


def _count(root: Path) -> int:
    return int((root / "count").read_text().strip() or 0)


def _wait_count(root: Path, above: int, timeout: float = 30) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            n = _count(root)
        except (FileNotFoundError, ValueError):
            n = -1
        if n > above:
            return n
        time.sleep(0.2)
    raise AssertionError(f"counter in {root} did not pass {above} within {timeout} s")


def test_criu_check() -> None:
    out = sh("criu", "check", timeout=120)
    assert "Looks good." in out.stdout + out.stderr


def test_lxc_checkpoint_restore_counter(lxcpath: Path, tmp_path: Path) -> None:
    name = unique("ck")
    cdir = make_container(lxcpath, name, ["/run.sh"], script=COUNTER, extra=[
        # CRIU restores the container's own mounts; AppArmor stays out of the way here (the
        # AppArmor test covers it), and the console is not a pty that CRIU would have to
        # treat as external.
        "lxc.apparmor.profile = unconfined",
        "lxc.console.path = none",
    ])
    root = cdir / "rootfs"
    sh("lxc-start", "-P", lxcpath, "-n", name, "-d", "-l", "DEBUG", "-o", tmp_path / "start.log")
    before = _wait_count(root, 3)
    images = tmp_path / "images"
    images.mkdir()
    # -s: stop the container after the dump. Then the counter must not move.
    r = sh("lxc-checkpoint", "-P", lxcpath, "-n", name, "-s", "-D", images, "-v", check=False,
           timeout=180)
    assert r.returncode == 0, (r, _logs(images))
    assert sh("lxc-info", "-P", lxcpath, "-n", name, "-s").stdout.split()[-1] == "STOPPED"
    dumped = _count(root)
    assert dumped >= before
    time.sleep(1.0)
    assert _count(root) == dumped, "a stopped container's counter moved"

    r = sh("lxc-checkpoint", "-P", lxcpath, "-n", name, "-r", "-D", images, "-v", check=False,
           timeout=180)
    assert r.returncode == 0, (r, _logs(images))
    assert sh("lxc-info", "-P", lxcpath, "-n", name, "-s").stdout.split()[-1] == "RUNNING"
    after = _wait_count(root, dumped + 2)
    # Continued, not restarted: a fresh start would count from 1 again.
    assert after > dumped


def _logs(images: Path) -> str:
    parts = []
    for log in sorted(images.glob("*.log")):
        parts.append(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-30:]))
    return "\n".join(parts)
