"""AppArmor: a profile loaded with apparmor_parser confines a process and denies a read."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.kernel.helpers import sh, unique

pytestmark = [pytest.mark.kernel, pytest.mark.pve9]

SECURITYFS = Path("/sys/kernel/security")


def _profile(name: str, secret: Path) -> str:
    # Everything allowed except reading one file: the test is about enforcement, not about
    # writing a tight profile. "deny" rules win over allow rules in AppArmor.
    return f"""\
profile {name} flags=(attach_disconnected) {{
  file,
  capability,
  network,
  signal,
  deny {secret} r,
}}
"""


def _confined(profile: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    def enter() -> None:
        # AppArmor's change_onexec: the profile applies from the next execve (the same thing
        # libapparmor's aa_change_onexec and LXC do).
        with open("/proc/self/attr/exec", "w") as f:
            f.write(f"exec {profile}")

    return subprocess.run(argv, capture_output=True, text=True, preexec_fn=enter, timeout=30,
                          check=False)


def test_apparmor_enabled() -> None:
    assert "apparmor" in (SECURITYFS / "lsm").read_text().split(",")
    assert (SECURITYFS / "apparmor" / "profiles").exists()
    assert Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y"


def test_apparmor_profile_denies_read(tmp_path: Path) -> None:
    name = unique("lxcri-smoke-")
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    allowed.write_text("fine\n")
    secret.write_text("classified\n")
    prof = tmp_path / "profile"
    prof.write_text(_profile(name, secret))
    sh("apparmor_parser", "-r", "-K", prof)
    try:
        loaded = (SECURITYFS / "apparmor" / "profiles").read_text()
        assert f"{name} (enforce)" in loaded
        assert sh("aa-status", "--enabled", check=False).returncode == 0

        me = _confined(name, ["/bin/cat", "/proc/self/attr/current"])
        assert me.stdout.strip() == f"{name} (enforce)", me

        ok = _confined(name, ["/bin/cat", str(allowed)])
        assert ok.returncode == 0 and ok.stdout == "fine\n", ok

        denied = _confined(name, ["/bin/cat", str(secret)])
        assert denied.returncode != 0, denied
        assert "Permission denied" in denied.stderr, denied

        # The same from Python: the syscall itself fails with EACCES.
        code = f"open({str(secret)!r}).read()"
        py = _confined(name, ["/usr/bin/python3", "-c", code])
        assert "PermissionError" in py.stderr and f"[Errno {errno.EACCES}]" in py.stderr, py

        # Unconfined, the same file is readable: the profile made the difference.
        assert os.access(secret, os.R_OK) and secret.read_text() == "classified\n"
    finally:
        sh("apparmor_parser", "-R", "-K", prof, check=False)
    assert name not in (SECURITYFS / "apparmor" / "profiles").read_text()
