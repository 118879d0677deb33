"""LXC in the kernel test host: whole containers run there, also under AppArmor."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernel.helpers import make_container, sh, unique

pytestmark = [pytest.mark.kernel, pytest.mark.pve9]


def test_lxc_execute_exit_status(lxcpath: Path) -> None:
    name = unique("ex")
    make_container(lxcpath, name, ["/bin/true"], extra=["lxc.apparmor.profile = unconfined"])
    out = sh("lxc-execute", "-P", lxcpath, "-n", name, "--", "/bin/echo", "hello", timeout=60)
    assert out.stdout.strip() == "hello"
    r = sh("lxc-execute", "-P", lxcpath, "-n", name, "--", "/bin/sh", "/run.sh", check=False,
           timeout=60)
    assert r.returncode != 0  # no /run.sh: busybox sh fails, and lxc-execute passes that on


def test_lxc_container_under_generated_apparmor_profile(lxcpath: Path) -> None:
    """LXC 5 generates, loads and applies its per-container profile when AppArmor is active."""
    name = unique("aa")
    make_container(lxcpath, name, ["/bin/sleep", "300"],
                   extra=["lxc.apparmor.profile = generated", "lxc.console.path = none"])
    log = lxcpath / "aa.log"
    r = sh("lxc-start", "-P", lxcpath, "-n", name, "-d", "-l", "INFO", "-o", log, check=False,
           timeout=120)
    assert r.returncode == 0, (r, log.read_text()[-3000:] if log.exists() else "")
    pid = sh("lxc-info", "-P", lxcpath, "-n", name, "-p", "-H").stdout.strip()
    # Read from outside: LXC stacks the profile with an AppArmor namespace of its own
    # ("<profile>//&:<ns>:"), so inside the container the label reads "unconfined".
    label = Path(f"/proc/{pid}/attr/current").read_text().strip()
    assert label.startswith(f"lxc-{name}_") and label.endswith("(enforce)"), label
    profiles = Path("/sys/kernel/security/apparmor/profiles").read_text()
    assert f"lxc-{name}_" in profiles
    sh("lxc-stop", "-P", lxcpath, "-n", name, "-k", timeout=60)
