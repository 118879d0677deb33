"""AppArmor through the OCI translation (process.apparmorProfile → lxc.apparmor.profile), in
the kernel test host where Debian's kernel enforces AppArmor.

- a container given a profile is confined by it: a read the profile denies fails;
- a container without a profile gets the documented default (``generated``: LXC's per-container
  profile), never ``unconfined``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from runtime.lxc.backend import LxcBackend, LxcContainer
from runtime.reaper import Reaper
from runtime.types import CreateConfig, Stdio
from tests.harness.rootfs import populate_busybox_rootfs
from tests.kernel.helpers import sh, unique

pytestmark = [pytest.mark.kernel, pytest.mark.pve9]

PROFILE = """\
profile {name} flags=(attach_disconnected,mediate_deleted) {{
  file,
  capability,
  network,
  signal,
  mount,
  umount,
  pivot_root,
  ptrace,
  unix,
  deny /secret r,
}}
"""


def spec(script: str, **process: Any) -> dict[str, Any]:
    return {
        "ociVersion": "1.0.2",
        "process": {"args": ["/bin/sh", "-c", script], "env": ["PATH=/bin:/sbin"], "cwd": "/",
                    "user": {"uid": 0, "gid": 0}, **process},
        "root": {"path": "rootfs"},
        "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount",
                                                        "network")]},
    }


class World:
    def __init__(self, base: Path, backend: LxcBackend) -> None:
        self.base, self.backend = base, backend
        self.handles: list[LxcContainer] = []

    async def create(self, s: dict[str, Any]) -> tuple[LxcContainer, Path]:
        bundle = self.base / uuid.uuid4().hex[:6]
        populate_busybox_rootfs(bundle / "rootfs")
        (bundle / "rootfs" / "secret").write_text("classified\n")
        out = self.base / f"out-{bundle.name}"
        handle = await self.backend.create(CreateConfig(
            id=unique("aa"), namespace="kernel", bundle=bundle, spec=s,
            stdio=Stdio(stdout=f"file://{out}", stderr=f"file://{out}"),
            state_dir=self.base / f"s-{bundle.name}"))
        self.handles.append(handle)
        return handle, out


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    reaper = Reaper()
    reaper.install(asyncio.get_running_loop(), subreaper=False)
    w = World(tmp_path, LxcBackend(reaper, tmp_path / "lxc"))
    try:
        yield w
    finally:
        for h in w.handles:
            with contextlib.suppress(Exception):
                await h.delete()
        reaper.uninstall()
        shutil.rmtree(tmp_path / "lxc", ignore_errors=True)


@pytest.mark.asyncio
async def test_container_with_a_profile_is_confined_by_it(world: World, tmp_path: Path) -> None:
    name = unique("lxcri-oci-")
    prof = tmp_path / "profile"
    prof.write_text(PROFILE.format(name=name))
    sh("apparmor_parser", "-r", "-K", prof)
    try:
        s = spec("cat /secret; echo rc=$?; cat /proc/self/attr/current",
                 apparmorProfile=name)
        handle, out = await world.create(s)
        await handle.start()
        assert await handle.wait() == 0
        text = out.read_text()
        assert "Permission denied" in text and "rc=1" in text, text
        assert "classified" not in text
        assert name in text, text
    finally:
        sh("apparmor_parser", "-R", "-K", prof, check=False)


@pytest.mark.asyncio
async def test_container_without_a_profile_gets_the_default_not_unconfined(
        world: World) -> None:
    handle, out = await world.create(spec("cat /secret; sleep 2"))
    await handle.start()
    await asyncio.sleep(0.5)
    label = Path(f"/proc/{handle.pid}/attr/current").read_text().strip()
    assert label != "unconfined" and label.startswith("lxc-"), label
    assert await handle.wait() == 0
    assert "classified" in out.read_text()  # the default profile allows the rootfs


@pytest.mark.asyncio
async def test_profile_with_no_new_privileges(world: World, tmp_path: Path) -> None:
    # containerd's default spec sets noNewPrivileges: LXC applies the profile at the init's
    # exec (change_onexec) and no_new_privs right before it; the profile must still apply.
    name = unique("lxcri-nnp-")
    prof = tmp_path / "profile"
    prof.write_text(PROFILE.format(name=name))
    sh("apparmor_parser", "-r", "-K", prof)
    try:
        s = spec("cat /secret; echo rc=$?; grep NoNewPrivs /proc/self/status",
                 apparmorProfile=name, noNewPrivileges=True)
        handle, out = await world.create(s)
        await handle.start()
        assert await handle.wait() == 0
        text = out.read_text()
        assert "Permission denied" in text and "NoNewPrivs:\t1" in text, text
    finally:
        sh("apparmor_parser", "-R", "-K", prof, check=False)
