"""pytest fixtures for integration tests: the busybox image and private containerd instances.

Loaded as a plugin (``pytest_plugins = ["tests.harness.fixtures"]``). Fixtures that need the
real components skip, with the reason, when not root or when containerd/ctr/busybox are missing.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.containerd import PrivateContainerd
from tests.harness.image import DEFAULT_REF, build_busybox_image
from tests.harness.rootfs import BUSYBOX

RUNC_RUNTIME = "io.containerd.runc.v2"
PROXMOX_RUNTIME = "io.containerd.proxmox.v2"


@dataclass(frozen=True)
class BusyboxImage:
    tar: Path
    ref: str


def integration_skip_reason() -> str | None:
    """Why the integration fixtures cannot run here, or None."""
    if os.geteuid() != 0:
        return "integration tests need root (containerd, mounts, LXC)"
    for tool in ("containerd", "ctr"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make setup installs it)"
    if not BUSYBOX.exists():
        return f"{BUSYBOX} is missing (Debian package busybox-static)"
    return None


def require_integration() -> None:
    reason = integration_skip_reason()
    if reason:
        pytest.skip(reason)


def _private_containerd(image: BusyboxImage) -> PrivateContainerd:
    ctd = PrivateContainerd()
    try:
        ctd.start()
        ctd.import_image(image.tar)
    except BaseException:
        ctd.cleanup()
        raise
    return ctd


@pytest.fixture(scope="session")
def busybox_image(tmp_path_factory: pytest.TempPathFactory) -> BusyboxImage:
    """The busybox OCI image tar, built once per session, and its ref."""
    require_integration()
    tar = build_busybox_image(tmp_path_factory.mktemp("image") / "busybox.tar", DEFAULT_REF)
    return BusyboxImage(tar=tar, ref=DEFAULT_REF)


@pytest.fixture(scope="session")
def containerd(busybox_image: BusyboxImage) -> Iterator[PrivateContainerd]:
    """A private containerd shared by the session, with the busybox image imported.

    Tests must remove their own containers (``remove_container``) and must not restart it.
    """
    ctd = _private_containerd(busybox_image)
    try:
        yield ctd
    finally:
        ctd.cleanup()


@pytest.fixture
def fresh_containerd(busybox_image: BusyboxImage) -> Iterator[PrivateContainerd]:
    """A private containerd of this test's own (e.g. to restart it), image imported."""
    ctd = _private_containerd(busybox_image)
    try:
        yield ctd
    finally:
        ctd.cleanup()


@pytest.fixture
def integration() -> None:
    """Skips the test (with the reason) where integration tests cannot run."""
    require_integration()


@pytest.fixture
def unique_id() -> str:
    """A short container id unique across runs, e.g. ``t-1a2b3c4d``."""
    return f"t-{uuid.uuid4().hex[:8]}"
