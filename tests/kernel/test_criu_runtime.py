"""CRIU checkpoint and restore of a container run by this runtime, in the kernel test host
(Debian's 6.1 kernel, where `criu check` passes, and OpenZFS).

The pieces are composed as the shim daemon composes them (shim/daemon.py): the Supervisor with
the LxcBackend and the storage provisioner, driven through the Task API's operations — create,
start, Checkpoint with ``exit`` (``ctr task checkpoint --exit``), delete, create from the
checkpoint, start. The container is a counter that writes its count to a file: after the
restore it must continue from where it was, not start again from 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from runtime import events as ev
from runtime.errdefs import FailedPrecondition, NotFound
from runtime.lxc import cleanup
from runtime.lxc.backend import LxcBackend
from runtime.lxc.mount import mounted_under, unmount
from runtime.reaper import Reaper
from runtime.store import Store
from runtime.supervisor import Supervisor
from runtime.types import CreateConfig, Status, Stdio
from storage.provisioner import CHECKPOINT_OPTION, StorageProvisioner
from tests.harness.rootfs import populate_busybox_rootfs
from tests.kernel.helpers import COUNTER_LOOP, sh

pytestmark = [pytest.mark.kernel, pytest.mark.pve9]

COUNTER = COUNTER_LOOP


@pytest.fixture
def pool(openzfs_pool: str) -> str:
    return openzfs_pool


@dataclass
class World:
    base: Path
    pool: str
    sup: Supervisor
    bundle: Path

    def config(self, cid: str, **extra: Any) -> CreateConfig:
        spec: dict[str, Any] = {
            "ociVersion": "1.0.2",
            "process": {"args": ["/bin/sh", "/counter.sh"], "cwd": "/",
                        "env": ["PATH=/bin:/sbin:/usr/bin"], "user": {"uid": 0, "gid": 0},
                        # AppArmor is on in the guest; its confinement has its own tests.
                        "apparmorProfile": "unconfined"},
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount",
                                                            "network")]},
        }
        settings = {"storage": {"zfs_pool": self.pool, "criu": "always",
                                "criu_dir": str(self.base / "criu")}}
        return CreateConfig(id=cid, namespace="k", bundle=self.bundle, spec=spec,
                            state_dir=self.base / f"{cid}-state", settings=settings, **extra)


@pytest_asyncio.fixture
async def world(pool: str) -> AsyncIterator[World]:
    reaper = Reaper()
    # A child subreaper, like the daemon: LXC's restore monitor is orphaned and comes back here.
    reaper.install(asyncio.get_running_loop(), subreaper=True)
    base = Path(tempfile.mkdtemp(prefix="criu-rt-"))
    bundle = base / "bundle"
    populate_busybox_rootfs(bundle / "rootfs")
    (bundle / "rootfs/counter.sh").write_text(COUNTER)
    sup = Supervisor(LxcBackend(reaper, base / "lxc"), ev.MemorySink(), Store(base / "store"),
                     "k", provisioners=(StorageProvisioner(reaper, base / "events.log"),),
                     reaper=reaper)
    w = World(base, pool, sup, bundle)
    try:
        yield w
    finally:
        for cid in sup.ids():
            with contextlib.suppress(Exception):
                sup.kill(cid, "", signal.SIGKILL, True)
            with contextlib.suppress(Exception):
                await sup.wait(cid)
                await sup.delete(cid)
        for point in reversed(mounted_under(base)):
            unmount(point)
        reaper.uninstall()
        shutil.rmtree(base, ignore_errors=True)


async def count_above(root: Path, above: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            n = int((root / "count").read_text().strip())
            if n > above:
                return n
        await asyncio.sleep(0.2)
    raise AssertionError(f"the counter in {root} did not pass {above} within {timeout} s")


def datasets(pool: str) -> list[str]:
    out = sh("zfs", "list", "-H", "-o", "name", "-t", "filesystem,snapshot", "-r", pool)
    return out.stdout.split()


@pytest.mark.asyncio
async def test_task_checkpoint_with_criu_and_restore_continues_the_counter(world: World) -> None:
    sup = world.sup
    pid = await sup.create(world.config("c1"))
    await sup.start("c1")
    root1 = Path(f"/proc/{pid}/root")
    await count_above(root1, 3)
    # PID 1 is the program itself (the in-container init exec'd it), an executable inside the
    # container: what makes the container dumpable.
    assert Path(f"/proc/{pid}/exe").readlink() == Path("/bin/busybox")

    cpdir = world.base / "containerd-checkpoint"
    started = time.monotonic()
    await sup.checkpoint("c1", cpdir, exit=True)
    dump_seconds = time.monotonic() - started
    exit1 = await asyncio.wait_for(sup.wait("c1"), 60)
    assert exit1.status == 137  # like runc's --exit: the dumped processes were stopped
    dataset = f"{world.pool}/containers/c1"
    mountpoint = sh("zfs", "get", "-H", "-o", "value", "mountpoint", dataset).stdout.strip()
    dumped = int(Path(mountpoint, "count").read_text())
    images = [p for p in (world.base / "criu" / "c1").iterdir() if p.is_dir()]
    assert len(images) == 1 and (images[0] / "inventory.img").is_file()
    await sup.delete("c1")
    assert not (world.base / "lxc" / "k-c1").exists()

    started = time.monotonic()
    pid2 = await sup.create(world.config("c2", options={CHECKPOINT_OPTION: str(cpdir)}))
    restore_seconds = time.monotonic() - started
    root2 = Path(f"/proc/{pid2}/root")
    # Created, not started: the restored processes are frozen on the checkpoint's count (the
    # supervisor froze them before the dump, CRIU's pre-resume action before they ran again).
    held = int((root2 / "count").read_text())
    assert held == dumped
    await asyncio.sleep(1.0)
    assert int((root2 / "count").read_text()) == held
    await sup.start("c2")
    # They go on from there: a fresh start would write 1, 2, 3 over the checkpoint's file.
    assert await count_above(root2, held) == held + 1
    assert await count_above(root2, held + 1) > held + 1
    print(f"CRIU-TIMES dump+stop {dump_seconds:.2f}s restore {restore_seconds:.2f}s "
          f"(QEMU TCG)")

    # The restored shell is PID 1 (as under runc): SIGTERM without a handler is dropped, and
    # SIGKILL's 137 reaches the Task API.
    sup.kill("c2", "", signal.SIGTERM)
    await asyncio.sleep(1.0)
    assert int((root2 / "count").read_text()) > held + 1  # still counting
    sup.kill("c2", "", signal.SIGKILL)
    exit2 = await asyncio.wait_for(sup.wait("c2"), 60)
    assert exit2.status == 128 + signal.SIGKILL
    await sup.delete("c2")
    assert not (world.base / "lxc" / "k-c2").exists()
    assert not (world.base / "c2-state" / cleanup.OWN_INIT_DIR).exists()
    assert not [d for d in datasets(world.pool) if "/containers/c2" in d]
    assert mounted_under(world.bundle) == []


@pytest.mark.asyncio
async def test_a_restored_program_that_exits_reports_its_own_status(world: World) -> None:
    # Its parent is LXC's restore monitor, which passes no status on (runtime.lxc.restore):
    # the status comes from the zombie, or from the daemon's reaper once the monitor is gone.
    sup = world.sup
    config = world.config("c9")
    config.spec["process"]["args"] = [
        "/bin/sh", "-c", "while [ ! -e /stop ]; do echo x > /count; sleep 0.2; done; "
        "exit $(cat /stop)"]
    pid = await sup.create(config)
    await sup.start("c9")
    await asyncio.sleep(0.5)
    await sup.checkpoint("c9", world.base / "cp9", exit=True)
    assert (await asyncio.wait_for(sup.wait("c9"), 60)).status == 137
    await sup.delete("c9")
    del pid

    pid2 = await sup.create(world.config("c10", options={
        CHECKPOINT_OPTION: str(world.base / "cp9")}))
    await sup.start("c10")
    Path(f"/proc/{pid2}/root/stop").write_text("7\n")
    assert (await asyncio.wait_for(sup.wait("c10"), 60)).status == 7
    await sup.delete("c10")


@pytest.mark.asyncio
async def test_the_restored_program_writes_to_the_new_tasks_stdout(world: World) -> None:
    # containerd's FIFOs are files outside the container: dumped as external files, and the
    # restored program gets the new task's FIFO in their place.
    sup = world.sup
    out1, out2 = world.base / "out1", world.base / "out2"
    os.mkfifo(out1)
    os.mkfifo(out2)
    r1 = os.open(out1, os.O_RDONLY | os.O_NONBLOCK)
    r2 = os.open(out2, os.O_RDONLY | os.O_NONBLOCK)
    try:
        config = world.config("c3", stdio=Stdio(stdout=str(out1)))
        config.spec["process"]["args"] = ["/bin/sh", "-c",
                                          "i=0; while :; do i=$((i+1)); echo $i; sleep 0.2; done"]
        await sup.create(config)
        await sup.start("c3")
        before = await numbers(r1, at_least=3)
        await sup.checkpoint("c3", world.base / "cp3", exit=True)
        assert (await asyncio.wait_for(sup.wait("c3"), 60)).status == 137
        last = (before + await numbers(r1, at_least=0, settle=0.5))[-1]
        await sup.delete("c3")

        await sup.create(world.config("c4", stdio=Stdio(stdout=str(out2)),
                                      options={CHECKPOINT_OPTION: str(world.base / "cp3")}))
        await sup.start("c4")
        after = await numbers(r2, at_least=3)
        # The count goes on from memory. The line being written when the processes were
        # frozen for the dump may come out once more (measured: 1..4 before, 4, 5, 6 after).
        first = after[0]
        assert first in (last, last + 1), (last, after)
        assert after[:3] == [first, first + 1, first + 2], (last, after)
        # Nothing more reaches the old task's FIFO.
        assert await numbers(r1, at_least=0, settle=0.5) == []
    finally:
        os.close(r1)
        os.close(r2)


async def numbers(fd: int, at_least: int, settle: float = 0.0, timeout: float = 60) -> list[int]:
    """The numbers (one per line) readable from ``fd``: at least ``at_least`` of them, or
    whatever arrives within ``settle`` seconds."""
    data = b""
    deadline = time.monotonic() + (timeout if at_least else settle)
    while time.monotonic() < deadline:
        with contextlib.suppress(BlockingIOError):
            data += os.read(fd, 65536)
        lines = data.split(b"\n")[:-1]
        if at_least and len(lines) >= at_least:
            return [int(x) for x in lines]
        await asyncio.sleep(0.1)
    if at_least:
        raise AssertionError(f"fewer than {at_least} lines within {timeout} s: {data!r}")
    return [int(x) for x in data.split(b"\n")[:-1]]


@pytest.mark.asyncio
async def test_the_restored_program_reads_the_new_tasks_stdin(world: World) -> None:
    # The shim feeds a task's stdin through a pipe: dumped as a pipe, and the restored program
    # reads from the new task's pipe in its place.
    sup = world.sup
    paths = {name: world.base / name for name in ("in1", "out1", "in2", "out2")}
    for path in paths.values():
        os.mkfifo(path)
    # O_RDWR: the test stands for containerd, which holds both FIFOs' other ends.
    fds = {name: os.open(path, os.O_RDWR | os.O_NONBLOCK) for name, path in paths.items()}
    try:
        config = world.config("c5", stdio=Stdio(stdin=str(paths["in1"]),
                                                 stdout=str(paths["out1"])))
        config.spec["process"]["args"] = ["/bin/sh", "-c",
                                          "while read x; do echo got-$x; done"]
        await sup.create(config)
        await sup.start("c5")
        os.write(fds["in1"], b"a\n")
        assert await lines(fds["out1"], 1) == [b"got-a"]
        await sup.checkpoint("c5", world.base / "cp5", exit=True)
        assert (await asyncio.wait_for(sup.wait("c5"), 60)).status == 137
        await sup.delete("c5")

        await sup.create(world.config("c6", stdio=Stdio(stdin=str(paths["in2"]),
                                                        stdout=str(paths["out2"])),
                                      options={CHECKPOINT_OPTION: str(world.base / "cp5")}))
        await sup.start("c6")
        os.write(fds["in2"], b"b\n")
        assert await lines(fds["out2"], 1) == [b"got-b"]
    finally:
        for fd in fds.values():
            os.close(fd)


async def lines(fd: int, n: int, timeout: float = 60) -> list[bytes]:
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(BlockingIOError):
            data += os.read(fd, 65536)
        if data.count(b"\n") >= n:
            return data.split(b"\n")[:n]
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {n} lines within {timeout} s: {data!r}")


@pytest.mark.asyncio
async def test_a_failed_dump_keeps_nothing_and_the_container_runs_on(world: World) -> None:
    # A terminal is the shim's pty, outside the container: CRIU refuses to dump it.
    sup = world.sup
    out = world.base / "tty-out"
    os.mkfifo(out)
    reader = os.open(out, os.O_RDWR | os.O_NONBLOCK)
    try:
        pid = await sup.create(world.config("c7", stdio=Stdio(stdout=str(out), terminal=True)))
        await sup.start("c7")
        root = Path(f"/proc/{pid}/root")
        before = await count_above(root, 2)
        with pytest.raises(FailedPrecondition, match="criu dump failed: ") as failure:
            await sup.checkpoint("c7", world.base / "cp7", exit=True)
        assert "/dev/pts/" in str(failure.value), str(failure.value)  # CRIU names the pty
        # No snapshot, no images; thawed and still counting, not killed.
        assert not [d for d in datasets(world.pool) if "/containers/c7@" in d]
        assert not list((world.base / "criu" / "c7").glob("*"))
        assert sup.state("c7").status is Status.RUNNING
        assert await count_above(root, before) > before
    finally:
        os.close(reader)


@pytest.mark.asyncio
async def test_a_restore_that_cannot_start_leaves_nothing(world: World) -> None:
    sup = world.sup
    await sup.create(world.config("c8"))
    await sup.start("c8")
    await count_above(Path(f"/proc/{sup.state('c8').pid}/root"), 2)
    await sup.checkpoint("c8", world.base / "cp8", exit=True)
    await asyncio.wait_for(sup.wait("c8"), 60)
    await sup.delete("c8")
    images = next((world.base / "criu" / "c8").iterdir())
    (images / "inventory.img").unlink()  # a damaged set of images

    with pytest.raises(NotFound, match="inventory.img"):
        await sup.create(world.config("c9", options={CHECKPOINT_OPTION:
                                                     str(world.base / "cp8")}))
    assert "c9" not in sup.ids()
    assert not [d for d in datasets(world.pool) if "/containers/c9" in d]
    assert not (world.base / "lxc" / "k-c9").exists()
    assert not (world.base / "c9-state").exists() or not any(
        (world.base / "c9-state").iterdir())
    assert mounted_under(world.bundle) == []
