"""Hostile specs against the real thing (issue 12): the attack of the issue through containerd,
the seeded corpus of malformed bundles through ``proxmox-lxcri create``, and the rules the unit
tests' LXC reader assumes, checked against LXC 5.0.2 itself.

Nothing here is killed by name; each test uses its own temp dirs and ids and cleans up even when
it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import errdefs, oci
from runtime.lxc import config
from runtime.lxc.mount import mounted_under, unmount
from tests.harness import leaks
from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import BusyboxImage
from tests.integration.oci_probe import SKIPS, Probe, busybox, probe
from tests.integration.test_shim_containerd import RUNTIME, residue
from tests.unit.oci.hostile import Case, corpus

pytestmark = SKIPS
__all__ = ["busybox", "probe"]  # fixtures used by name

CLI = [sys.executable, "-c", "from shim.operator_cli import main; main()"]
REPO = Path(__file__).resolve().parents[2]


# --- the attack of the issue, through containerd -------------------------------------------


@pytest.fixture
def marker() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="lxcri-marker-"))
    yield d / "pwned"
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("sep", ["\r", "\n"], ids=["CR", "LF"])
def test_a_line_break_in_an_env_value_adds_no_config_line(
        containerd: PrivateContainerd, busybox_image: BusyboxImage, unique_id: str,
        marker: Path, sep: str) -> None:
    """``ctr run --env "X=1\\rlxc.hook.pre-start = /bin/touch MARKER"`` ran the hook as root on
    the host; now the create fails naming the field, and nothing is made."""
    try:
        r = containerd.ctr("run", "--rm", "--runtime", RUNTIME, "--env",
                           f"X=1{sep}lxc.hook.pre-start = /bin/touch {marker}",
                           busybox_image.ref, unique_id, "true", check=False, timeout=60)
        assert r.returncode != 0, r.stdout
        assert re.search(r"process\.env\[\d+\]: must not contain a line break", r.stderr), \
            r.stderr
        assert not marker.exists(), "the injected hook ran on the host"
        assert residue(containerd, unique_id) == []
    finally:
        containerd.remove_container(unique_id)
    assert not marker.exists()


# --- the seeded corpus through the OCI CLI ------------------------------------------------

#: The first refused cases of the corpus, a bounded number (each is one CLI process, ~0.6 s).
CLI_CASES = 30


def _refused(c: Case) -> str | None:
    """The validator's message for ``c`` (what the CLI must print), None if it accepts it."""
    try:
        oci.check_spec(c.spec)
        config.render(config.lxc_config(c.spec, _params()))
    except (errdefs.InvalidArgument, errdefs.NotImplementedErr) as exc:
        return str(exc)
    return None


def _params() -> config.Params:
    from tests.unit.lxc.test_config_text import params
    return params()


@pytest.fixture
def cli_base(busybox: Path) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="lxcri-fuzz-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        for point in reversed(mounted_under(base)):
            unmount(point)
        shutil.rmtree(base, ignore_errors=True)


def test_the_corpus_through_the_cli_is_refused_by_field_and_leaves_nothing(
        cli_base: Path, busybox: Path) -> None:
    root = cli_base / "root"
    picked = [(c, msg) for c in corpus(400) if (msg := _refused(c))][:CLI_CASES]
    assert len(picked) == CLI_CASES
    ids = [f"fz{uuid.uuid4().hex[:8]}" for _ in picked]
    before = leaks.snapshot([cli_base], [root / "lxc"], ids)
    for (c, msg), id in zip(picked, ids, strict=True):
        bundle = cli_base / f"b-{c.index}"
        bundle.mkdir()
        (bundle / "rootfs").symlink_to(busybox)
        (bundle / "config.json").write_text(c.json())
        done = subprocess.run([*CLI, "--root", str(root), "create", "--bundle", str(bundle),
                               id], capture_output=True, text=True, timeout=60, cwd=REPO,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 1, (c.index, done.stdout, done.stderr)
        printed = re.search(r'msg=(".*")', done.stderr)
        assert printed is not None, done.stderr
        # The same field and problem as the validator, escaped: one log line per error.
        assert json.loads(printed.group(1)) == msg, (c.index, c.fields)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (root / "containers" / "default" / id).exists()
        assert not os.path.exists("/tmp/lxcri-fuzz-marker")
    leaks.assert_no_leaks(before, leaks.snapshot([cli_base], [root / "lxc"], ids))
    left = list((root / "containers").rglob("*")) if (root / "containers").exists() else []
    assert left == []


# --- LXC itself reads values back as the renderer means them ----------------------------


@pytest.mark.asyncio
async def test_lxc_reads_back_values_it_would_trim_unquote_or_split(probe: Probe) -> None:
    """The renderer's quoting, checked against LXC 5.0.2: padded and quoted values, a '#', an
    '=', and the characters that look like line breaks but are not to LXC (\\f, \\v, U+0085,
    U+2028) reach the container unchanged; a mount point with a space and a tab is made."""
    env = ["PATH=/bin:/usr/bin", "A= padded ", 'B="quoted"', "C='single'", "D=#not a comment",
           "E=x = y", "F=\f\v\x85\u2028end", "G=\t"]
    spec = probe.spec("env; hostname; grep -c ' /a\\\\040b\\\\011c ' /proc/self/mounts",
                      hostname='"web"')
    spec["process"]["env"] = env
    spec["mounts"] = [{"destination": "/a b\tc", "type": "tmpfs", "source": "tmpfs",
                       "options": ["mode=0755"]}]
    oci.check_spec({**spec, "root": {"path": "rootfs"}})
    status, out = await probe.run(spec)
    assert status == 0, out
    lines = out.split("\n")
    for item in env:
        name = item.split("=", 1)[0]
        got = next((ln for ln in lines if ln.startswith(name + "=")), None)
        if "\n" not in item:
            assert got == item, (item, got)
    assert '"web"' in lines
    assert "1" in lines, out
