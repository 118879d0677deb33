"""Tests under tests/kernel run inside the kernel test host (tests/kernelhost).

On the host the plugin registered here dispatches every ``kernel`` item to one guest boot; the
fixtures below therefore only ever run in the guest (Debian's 6.1 kernel, root, PID 1's own
mount namespace on a tmpfs overlay of the host root).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.kernel.helpers import IP, sh, unique
from tests.kernelhost.plugin import in_guest, install, only_for


def pytest_configure(config: pytest.Config) -> None:
    install(config)


@pytest.fixture(autouse=True)
def _only_in_guest(request: pytest.FixtureRequest) -> None:
    # The host never runs these bodies (the plugin replays guest results instead); this guard
    # keeps it that way if the plugin were disabled with -p no:...
    node = request.node
    if (node.get_closest_marker("kernel") or only_for(node, "pve9")) and not in_guest():
        pytest.fail("kernel tests run only inside the kernel test host (tests/kernelhost)")


@pytest.fixture
def netns() -> Iterator[Callable[[str], str]]:
    """A factory of named network namespaces, all deleted afterwards."""
    made: list[str] = []

    def make(prefix: str = "kt") -> str:
        name = unique(prefix)
        sh(IP, "netns", "add", name)
        made.append(name)
        sh(IP, "-n", name, "link", "set", "lo", "up")
        return name

    yield make
    for name in reversed(made):
        sh(IP, "netns", "del", name, check=False)


@pytest.fixture
def lxcpath(tmp_path: Path) -> Iterator[Path]:
    """An LXC path (-P) whose containers are stopped afterwards."""
    p = tmp_path / "lxc"
    p.mkdir()
    yield p
    for c in p.iterdir():
        if (c / "config").exists():
            sh("lxc-stop", "-P", p, "-n", c.name, "-k", check=False, timeout=30)


@pytest.fixture
def openzfs_pool(tmp_path: Path) -> Iterator[str]:
    """An OpenZFS pool on a 512 MB sparse file, its datasets mounted under the test's tmp
    dir; destroyed afterwards. cachefile=none: nothing to import at the next boot."""
    vdev = tmp_path / "vdev0.img"
    with vdev.open("wb") as f:
        f.truncate(512 << 20)
    name = unique("kz")
    sh("zpool", "create", "-o", "cachefile=none", "-m", tmp_path / "mnt", name, vdev,
       timeout=120)
    yield name
    sh("zpool", "destroy", "-f", name, check=False, timeout=120)
