"""The OCI translation end to end through containerd: what ``ctr run`` asks is what the
container sees (``--seccomp``, the default capability set, masked paths, ``--with-ns``), and an
invalid spec is refused with the field's name."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import BusyboxImage

pytestmark = pytest.mark.integration

RUNTIME = "io.containerd.proxmox.v2"
#: containerd 1.6's default capability set (oci.WithDefaultSpec): bits of CAP_CHOWN … CAP_SETFCAP.
_DEFAULT_CAPS = (0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31)


def run(ctd: PrivateContainerd, image: BusyboxImage, id: str, flags: list[str],
        *cmd: str) -> subprocess.CompletedProcess[str]:
    return ctd.ctr("run", "--rm", "--runtime", RUNTIME, *flags, image.ref, id, *cmd,
                   check=False, timeout=60)


@pytest.fixture
def cid(containerd: PrivateContainerd, unique_id: str) -> Iterator[str]:
    yield unique_id
    containerd.remove_container(unique_id)


def status(out: str, name: str) -> str:
    return next(ln.split(":", 1)[1].strip() for ln in out.splitlines()
                if ln.startswith(name + ":"))


def test_ctr_run_seccomp_caps_and_masked_paths(containerd: PrivateContainerd,
                                                busybox_image: BusyboxImage, cid: str) -> None:
    r = run(containerd, busybox_image, cid, ["--seccomp"],
            "sh", "-c", "grep -E '^(Cap|Seccomp|NoNewPrivs)' /proc/self/status; "
                        "wc -c < /proc/timer_list; echo 1 > /proc/sys/kernel/shmmni")
    assert status(r.stdout, "Seccomp") == "2", r.stdout + r.stderr
    assert status(r.stdout, "NoNewPrivs") == "1"
    want = format(sum(1 << b for b in _DEFAULT_CAPS), "016x")
    assert status(r.stdout, "CapBnd") == want and status(r.stdout, "CapEff") == want
    assert "\n0\n" in r.stdout  # /proc/timer_list is masked
    assert "Read-only file system" in r.stderr  # /proc/sys is read-only


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"ocic-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "probe0", "type", "veth", "peer",
                        "name", "probe1"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_ctr_run_with_ns_joins_the_network_namespace(
        containerd: PrivateContainerd, busybox_image: BusyboxImage, cid: str,
        netns: str) -> None:
    r = run(containerd, busybox_image, cid, ["--with-ns", f"network:/var/run/netns/{netns}"],
            "grep", "-o", "probe0", "/proc/net/dev")
    assert (r.returncode, r.stdout) == (0, "probe0\n"), r.stderr
