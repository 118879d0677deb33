"""The Debian package (`make deb`, issue 15): built, installed, used by containerd, purged.

The package must run containers with nothing from this checkout: containerd's PATH here holds
only the system directories, so the shim it finds is the package's /usr/bin launcher. After
``dpkg --purge`` nothing of the package may be left on the host.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import BusyboxImage
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "proxmox-lxcri"
PREFIX = Path("/usr/lib/proxmox-lxcri")
OWNED = (PREFIX, Path("/usr/bin/containerd-shim-proxmox-v2"), Path("/usr/bin/proxmox-lxcri"),
         Path("/etc/proxmox-lxcri"), Path("/usr/share/doc/proxmox-lxcri"))
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def installed() -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PACKAGE], capture_output=True,
                       text=True, check=False)
    return "ok installed" in r.stdout or "config-files" in r.stdout


def shim_processes(folder: Path) -> dict[int, str]:
    """PID -> cmdline of the shim daemons and the zygote started for the containerd in
    ``folder`` (they show in ``ps`` under those names, shim/proctitle.py)."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            env = (p / "environ").read_bytes()
            cmd = (p / "cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if str(folder).encode() in env and cmd.startswith(
                ("containerd-shim-proxmox-v2 ", "proxmox-lxcri-zygote ")):
            out[int(p.name)] = cmd
    return out


def runs_from_prefix(pid: int) -> bool:
    """The process has the package's modules loaded (e.g. setproctitle's and protobuf's
    extension modules from its private site-packages)."""
    try:
        return f" {PREFIX}/" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.fixture
def deb(tmp_path: Path) -> Path:
    if installed():
        pytest.skip(f"{PACKAGE} is installed on this host; the test would remove it")
    r = subprocess.run(["bash", str(REPO / "packaging" / "build-deb.sh"), str(REPO),
                        str(tmp_path)], capture_output=True, text=True, check=False,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    return Path(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def installed_deb(deb: Path) -> Iterator[Path]:
    try:
        r = subprocess.run(["dpkg", "-i", str(deb)], capture_output=True, text=True,
                           check=False, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        assert r.returncode == 0, r.stdout + r.stderr
        yield deb
    finally:
        if installed():
            subprocess.run(["dpkg", "--purge", PACKAGE], capture_output=True, check=False)


def test_package_runs_a_container_and_purges_clean(installed_deb: Path,
                                                   busybox_image: BusyboxImage) -> None:
    contents = subprocess.run(["dpkg-deb", "-c", str(installed_deb)], capture_output=True,
                              text=True, check=True).stdout
    # The project's generic package names stay inside the private prefix.
    for name in ("runtime", "storage", "network", "shim", "protos"):
        assert f"{PREFIX}/lib/python3.11/site-packages/{name}/__init__.py" in contents
        assert f"/usr/lib/python3/dist-packages/{name}/" not in contents
    conffiles = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}", PACKAGE],
                               capture_output=True, text=True, check=True).stdout
    assert "/etc/proxmox-lxcri/config.toml" in conffiles

    version = subprocess.run(["/usr/bin/proxmox-lxcri", "version"], capture_output=True,
                             text=True, check=False)
    deb_version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", PACKAGE],
                                 capture_output=True, text=True, check=True).stdout
    assert version.stdout.strip() == f"proxmox-lxcri {deb_version}", version.stderr

    ctd = PrivateContainerd(env={"PATH": SYSTEM_PATH})
    try:
        ctd.start()
        ctd.import_image(busybox_image.tar)
        r = ctd.ctr("run", "--rm", "--runtime", "io.containerd.proxmox.v2", busybox_image.ref,
                    "deb-hello", "sh", "-c", "echo hello from the package; exit 7",
                    check=False, timeout=60)
        assert (r.returncode, r.stdout) == (7, "hello from the package\n"), r.stderr
        # A detached task, to see which shim serves it: one running the package's code.
        ctd.ctr("run", "-d", "--runtime", "io.containerd.proxmox.v2", busybox_image.ref,
                "deb-sleep", "sleep", "60", timeout=60)
        shims = shim_processes(ctd.folder)
        assert any(c.startswith("containerd-shim-proxmox-v2 -namespace default -id deb-sleep ")
                   for c in shims.values()), shims
        assert all(runs_from_prefix(p) for p in shims), shims
        # The package's compiled launcher finds the package's zygote, whose runner runs the
        # actions (shim/zygote_relay.py).
        assert len(list(ctd.lxcri_root.glob("relay-*.sock"))) == 1
        wait_for(lambda: any(c.endswith(" runner") and runs_from_prefix(p)
                             for p, c in shim_processes(ctd.folder).items()),
                 what="the package's runner")
        ctd.remove_container("deb-sleep")
    finally:
        ctd.cleanup()

    r = subprocess.run(["dpkg", "--purge", PACKAGE], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not installed()
    assert [p for p in OWNED if p.exists() or p.is_symlink()] == []
