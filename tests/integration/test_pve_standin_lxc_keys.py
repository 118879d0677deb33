"""The PVE stand-in writes only LXC config keys the machine's LXC parses: a CT's ``env`` goes to
``lxc.environment.runtime`` where LXC has it (PVE 9's lxc-pve) and to ``lxc.environment``
where it does not (LXC 5.0.2 here, Debian 13's LXC 6.0.4 in the pve9 guest:
docs/pve9-differences.md, item 7). Checked by loading the generated config with LXC itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.pvestandin.lxc import lxc_config, lxc_supports_key

pytestmark = [pytest.mark.integration,
              pytest.mark.pve9]  # also in Debian 13 / LXC 6.0.4 (issue 16)


@pytest.fixture(autouse=True)
def _lxc() -> None:
    if shutil.which("lxc-info") is None:
        pytest.skip("lxc-info is not installed (Debian package lxc)")


def loads(folder: Path, text: str) -> subprocess.CompletedProcess[str]:
    (folder / "probe").mkdir(exist_ok=True)
    (folder / "probe" / "config").write_text(text)
    return subprocess.run(["lxc-info", "-P", str(folder), "-n", "probe"], capture_output=True,
                          text=True, timeout=60)


def test_the_probe_tells_known_from_unknown_keys() -> None:
    assert lxc_supports_key("lxc.environment")
    assert not lxc_supports_key("lxc.no-such-key")


def test_a_ct_with_env_gets_a_config_this_lxc_loads(tmp_path: Path) -> None:
    conf = {"hostname": "envct", "memory": "256", "ostype": "unmanaged",
            "env": "GREETING=hello\0PATH=/usr/bin:/bin"}
    text = lxc_config(101, conf, [], tmp_path, {})
    key = ("lxc.environment.runtime" if lxc_supports_key("lxc.environment.runtime")
           else "lxc.environment")
    assert f"{key} = GREETING=hello" in text.splitlines()
    r = loads(tmp_path, text)
    assert r.returncode == 0, r.stderr
