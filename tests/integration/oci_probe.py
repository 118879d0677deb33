"""Shared fixtures of the OCI tests: a busybox rootfs and a :class:`Probe` that runs one
container through the real LXC backend and returns its exit status and output.

Each test gets its own temp dirs and container names; the fixture deletes the containers and
unmounts even when the test fails. Nothing is killed by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from runtime import supervisor
from runtime.hooks import HookPoints
from runtime.lxc.backend import LxcBackend, LxcContainer
from runtime.lxc.mount import mounted_under, unmount
from runtime.reaper import Reaper
from runtime.types import CreateConfig, Mount, Stdio
from tests.harness.rootfs import populate_busybox_rootfs

SKIPS = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (LXC containers, mount(2))"),
    pytest.mark.skipif(shutil.which("lxc-execute") is None, reason="lxc-execute not installed"),
]

CTR_SECCOMP = json.loads((Path(__file__).parents[1] / "unit/lxc/ctr_seccomp_spec.json")
                         .read_text())


@pytest.fixture(scope="module")
def busybox() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="ocibb-"))
    root.chmod(0o755)  # mkdtemp's 0700 would lock a non-root container user out of "/"
    populate_busybox_rootfs(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class ProbeTask:
    """A container driven as the shim's supervisor and the OCI CLI drive one: the backend's
    handle, with the bundle validated first and the OCI hooks around each step."""

    handle: LxcContainer
    points: HookPoints | None

    @property
    def pid(self) -> int:
        return self.handle.pid

    async def start(self) -> None:
        await supervisor.start_container(self.handle, self.points)

    async def wait(self) -> int:
        return await self.handle.wait()

    def kill(self, signal: int, all: bool = False) -> None:
        self.handle.kill(signal, all)

    async def delete(self) -> None:
        await self.handle.delete()
        await supervisor.deleted(self.points)
        self.points = None  # poststop once, as the supervisor does


@dataclass
class Probe:
    base: Path
    busybox: Path
    backend: LxcBackend
    reaper: Reaper
    handles: list[ProbeTask] = field(default_factory=list)

    def spec(self, script: str, **extra: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "ociVersion": "1.0.2",
            "process": {"args": ["/bin/sh", "-c", script], "env": ["PATH=/bin:/sbin:/usr/bin"],
                        "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount",
                                                            "network")]},
        }
        for key, value in extra.items():
            section, _, name = key.partition("__")
            if name:
                spec.setdefault(section, {})[name] = value
            else:
                spec[section] = value
        return spec

    def create_config(self, spec: dict[str, Any], out: Path) -> CreateConfig:
        return CreateConfig(
            id=f"p{uuid.uuid4().hex[:10]}", namespace="ocitest", bundle=self.base / "b",
            spec=spec, rootfs=(Mount("bind", str(self.busybox), "", ("rbind", "rw")),),
            stdio=Stdio(stdout=f"file://{out}", stderr=f"file://{out}"),
            state_dir=self.base / "s")

    async def create(self, spec: dict[str, Any], out: Path) -> ProbeTask:
        config = self.create_config(spec, out)
        supervisor.validate(config)
        points = supervisor.hook_points(self.reaper, config)
        task = ProbeTask(await supervisor.create_container(self.backend, config, points),
                         points)
        self.handles.append(task)
        return task

    async def run(self, spec: dict[str, Any]) -> tuple[int, str]:
        """Create, start and wait for the container; its exit status and output."""
        out = self.base / f"out-{uuid.uuid4().hex[:6]}"
        handle = await self.create(spec, out)
        await handle.start()
        async with asyncio.timeout(20):
            status = await handle.wait()
        lxc_log = (self.base / "s" / "lxc.log")
        errors = lxc_log.read_text() if lxc_log.exists() and status == 255 else ""
        await handle.delete()
        return status, out.read_text() + errors


@pytest_asyncio.fixture
async def probe(busybox: Path) -> AsyncIterator[Probe]:
    reaper = Reaper()
    reaper.install(asyncio.get_running_loop(), subreaper=False)
    base = Path(tempfile.mkdtemp(prefix="ocip-"))
    base.chmod(0o755)  # LXC needs x access to the rootfs's parents for a user namespace
    (base / "b").mkdir()
    p = Probe(base=base, busybox=busybox, backend=LxcBackend(reaper, base / "lxc"),
              reaper=reaper)
    try:
        yield p
    finally:
        for handle in p.handles:
            with contextlib.suppress(Exception):
                await handle.delete()
        for point in reversed(mounted_under(base)):
            unmount(point)
        reaper.uninstall()
        shutil.rmtree(base, ignore_errors=True)
