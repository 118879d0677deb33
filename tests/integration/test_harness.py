"""The test harness itself, proven against containerd's own runc shim.

The runtime is only a name here: the same calls drive io.containerd.proxmox.v2 in other tests.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.harness import leaks
from tests.harness.containerd import PrivateContainerd
from tests.harness.image import build_busybox_image

if TYPE_CHECKING:  # the fixtures come from the plugin tests/conftest.py loads
    from tests.harness.fixtures import BusyboxImage

pytestmark = pytest.mark.integration

RUNTIME = "io.containerd.runc.v2"


def test_image_is_reproducible(tmp_path: Path, integration: None) -> None:
    a = build_busybox_image(tmp_path / "a.tar", "localhost/x:1")
    b = build_busybox_image(tmp_path / "b.tar", "localhost/x:1")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def test_image_imported(containerd: PrivateContainerd, busybox_image: BusyboxImage) -> None:
    assert busybox_image.ref in containerd.ctr("images", "ls", "-q").stdout.split()


def test_run_echo(containerd: PrivateContainerd, busybox_image: BusyboxImage,
                  unique_id: str) -> None:
    try:
        r = containerd.ctr("run", "--rm", "--runtime", RUNTIME, busybox_image.ref, unique_id,
                           "echo", "hello")
        assert r.stdout.strip() == "hello"
        assert unique_id not in containerd.ctr("containers", "ls", "-q").stdout.split()
    finally:
        containerd.remove_container(unique_id)


def test_exit_status_propagates(containerd: PrivateContainerd, busybox_image: BusyboxImage,
                                unique_id: str) -> None:
    try:
        r = containerd.ctr("run", "--rm", "--runtime", RUNTIME, busybox_image.ref, unique_id,
                           "sh", "-c", "exit 7", check=False)
        assert r.returncode == 7
    finally:
        containerd.remove_container(unique_id)


def test_restart_keeps_task_running(fresh_containerd: PrivateContainerd,
                                    busybox_image: BusyboxImage, unique_id: str) -> None:
    ctd = fresh_containerd
    ctd.ctr("run", "-d", "--runtime", RUNTIME, busybox_image.ref, unique_id, "sleep", "60")
    try:
        assert ctd.task_status(unique_id) == "RUNNING"
        shim = ctd.shim_pid(unique_id)
        assert shim is not None and leaks.alive(shim)
        old_containerd = ctd.pid

        ctd.restart()

        assert ctd.pid != old_containerd
        assert ctd.shim_pid(unique_id) == shim  # the same shim daemon, reconnected
        assert ctd.task_status(unique_id) == "RUNNING"
        ctd.ctr("task", "kill", "-s", "SIGKILL", unique_id)
    finally:
        ctd.remove_container(unique_id)
    assert ctd.task_status(unique_id) is None
    assert not ctd.bundle_dir(unique_id).exists()


def test_cleanup_leaves_nothing(busybox_image: BusyboxImage, unique_id: str) -> None:
    ctd = PrivateContainerd()
    folder = ctd.folder
    before = leaks.snapshot([folder], [ctd.lxcri_root / "lxc"], [unique_id])
    try:
        ctd.start()
        ctd.import_image(busybox_image.tar)
        # Left running on purpose: cleanup() must end the task, its shim and containerd.
        ctd.ctr("run", "-d", "--runtime", RUNTIME, busybox_image.ref, unique_id, "sleep", "60")
        shim = ctd.shim_pid(unique_id)
        containerd_pid = ctd.pid
        task_pid = int(ctd.ctr("task", "ls").stdout.splitlines()[1].split()[1])
        assert shim and containerd_pid and leaks.alive(task_pid)
        assert leaks.mounts_under([folder])  # the rootfs is mounted while it runs
    finally:
        ctd.cleanup()
    after = leaks.snapshot([folder], [ctd.lxcri_root / "lxc"], [unique_id])
    leaks.assert_no_leaks(before, after)
    assert not folder.exists()
    for pid in (shim, containerd_pid, task_pid):
        assert not leaks.alive(pid)
    ctd.cleanup()  # idempotent


def test_cleanup_after_containerd_died(busybox_image: BusyboxImage, unique_id: str) -> None:
    """With containerd gone, cleanup() must still find the shim and its container by PID."""
    ctd = PrivateContainerd()
    folder = ctd.folder
    before = leaks.snapshot([folder], [ctd.lxcri_root / "lxc"], [unique_id])
    try:
        ctd.start()
        ctd.import_image(busybox_image.tar)
        ctd.ctr("run", "-d", "--runtime", RUNTIME, busybox_image.ref, unique_id, "sleep", "60")
        shim = ctd.shim_pid(unique_id)
        task_pid = int(ctd.ctr("task", "ls").stdout.splitlines()[1].split()[1])
        assert ctd.pid is not None
        os.kill(ctd.pid, signal.SIGKILL)
        assert leaks.cgroups_named([unique_id])  # runc's cgroups, left to cleanup()
    finally:
        ctd.cleanup()
    leaks.assert_no_leaks(before, leaks.snapshot([folder], [ctd.lxcri_root / "lxc"], [unique_id]))
    assert not folder.exists()
    assert shim and not leaks.alive(shim) and not leaks.alive(task_pid)


def test_leaks_reports_a_mount(tmp_path: Path, integration: None) -> None:
    before = leaks.snapshot([tmp_path])
    target = tmp_path / "m"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(target)], check=True)
    try:
        after = leaks.snapshot([tmp_path])
        assert leaks.leaks(before, after) == [f"mount {target}"]
        with pytest.raises(AssertionError):
            leaks.assert_no_leaks(before, after)
    finally:
        subprocess.run(["umount", str(target)], check=True)
    leaks.assert_no_leaks(before, leaks.snapshot([tmp_path]))


def test_socket_listeners_finds_a_listener(integration: None) -> None:
    sock = Path("/tmp") / f"lxcri-sock-{uuid.uuid4().hex[:8]}"  # short: sun_path limit
    proc = subprocess.Popen(
        [sys.executable, "-c", "import socket,sys,time; s=socket.socket(socket.AF_UNIX);"
         f"s.bind({str(sock)!r}); s.listen(); print('ok', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ok"
        assert leaks.socket_listeners(f"unix://{sock}") == {proc.pid}
    finally:
        proc.kill()
        proc.wait()
        sock.unlink(missing_ok=True)
