"""Issue 12, item 8: no shim daemon and no socket file outlive what containerd knows.

``ctr run`` is killed at several points of a task's start; once the daemon's idle grace
(``$PROXMOX_LXCRI_SHIM_IDLE_GRACE``, a few seconds here) has passed, every task containerd gave
up has neither a daemon nor a socket file left, and every task it kept is still served. A daemon
killed outright leaves its socket file behind until containerd's ``delete`` removes it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from shim.manager import socket_address
from tests.harness import leaks
from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import BusyboxImage
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

RUNTIME = "io.containerd.proxmox.v2"
GRACE = 2.0
#: Seconds after which ctr run is killed: before the shim starts, during Create, during Start,
#: and once the task runs.
KILL_AFTER = (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5)


@pytest.fixture
def graced_containerd(busybox_image: BusyboxImage) -> Iterator[PrivateContainerd]:
    """A private containerd whose shims use a short idle grace."""
    ctd = PrivateContainerd(env={"PROXMOX_LXCRI_SHIM_IDLE_GRACE": str(GRACE)})
    try:
        ctd.start()
        ctd.import_image(busybox_image.tar)
        yield ctd
    finally:
        ctd.cleanup()


def socket_of(ctd: PrivateContainerd, id: str) -> str:
    return socket_address(ctd.address, ctd.namespace, id).removeprefix("unix://")


def known_tasks(ctd: PrivateContainerd) -> set[str]:
    return {line.split()[0] for line in ctd.ctr("task", "ls").stdout.splitlines()[1:] if line}


def shim_processes(ctd: PrivateContainerd) -> dict[int, str]:
    """Processes started for this containerd (its folder is in their environment: containerd
    passes its own to shims) apart from containerd itself and the zygote, the per-node fork
    server that outlives tasks by design (shim/zygote.py)."""
    found = leaks.processes_mentioning([str(ctd.folder)], env=True)
    return {pid: cmd for pid, cmd in found.items()
            if pid != ctd.pid and not cmd.startswith("proxmox-lxcri-zygote ")}


def leftovers(ctd: PrivateContainerd, ids: list[str]) -> list[str]:
    """Daemons and socket files of the tasks containerd does not know."""
    known = known_tasks(ctd)
    out = []
    for id in ids:
        if id in known:
            continue
        path = socket_of(ctd, id)
        if os.path.exists(path):
            out.append(f"{id}: socket file {path}")
        listeners = leaks.socket_listeners(path)
        if listeners:
            out.append(f"{id}: daemon {sorted(listeners)} still listening")
    return out


def test_killed_ctr_run_leaves_no_shim(graced_containerd: PrivateContainerd,
                                       busybox_image: BusyboxImage, unique_id: str) -> None:
    ctd = graced_containerd
    ids = [f"{unique_id}-{i}" for i in range(len(KILL_AFTER))]
    for id, delay in zip(ids, KILL_AFTER, strict=True):
        ctr = subprocess.Popen(
            [ctd.ctr_bin, "--address", ctd.address, "-n", ctd.namespace, "run", "--rm",
             "--runtime", RUNTIME, busybox_image.ref, id, "sleep", "60"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        ctr.send_signal(signal.SIGKILL)
        ctr.wait()
    ctd.record_shims()
    # Well past the grace: the idle watch checks every grace/4 seconds.
    try:
        wait_for(lambda: not leftovers(ctd, ids), timeout=GRACE * 4 + 20,
                 what="daemons of given-up tasks to exit and remove their sockets")
    except AssertionError:
        pytest.fail("\n".join(leftovers(ctd, ids)) + "\n" + ctd.log_text()[-6000:])
    # The tasks containerd kept are still served by their daemons.
    kept = known_tasks(ctd) & set(ids)
    for id in kept:
        assert ctd.task_status(id) in {"CREATED", "RUNNING", "STOPPED"}, id
        assert leaks.socket_listeners(socket_of(ctd, id)), f"{id}: no daemon"
    # And once removed through containerd, nothing of any of them is left.
    for id in kept:
        ctd.remove_container(id)
    for id in ids:
        ctd.ctr("containers", "delete", id, check=False)
    wait_for(lambda: not any(os.path.exists(socket_of(ctd, id)) or
                             leaks.socket_listeners(socket_of(ctd, id)) for id in ids),
             timeout=GRACE * 4 + 20, what="every socket to go")
    wait_for(lambda: not shim_processes(ctd), timeout=GRACE * 4 + 20,
             what=f"every shim process to exit: {shim_processes(ctd)}")


def test_delete_removes_a_killed_daemons_socket(containerd: PrivateContainerd,
                                                busybox_image: BusyboxImage,
                                                unique_id: str) -> None:
    cid = unique_id
    containerd.ctr("run", "-d", "--runtime", RUNTIME, busybox_image.ref, cid, "sleep", "120")
    try:
        address = (containerd.bundle_dir(cid) / "address").read_text()
        path = address.removeprefix("unix://")
        pid = containerd.shim_pid(cid)
        assert pid is not None and os.path.exists(path)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not leaks.alive(pid), what="the daemon to die")
        # A killed daemon cannot remove its own socket; containerd notices the lost connection
        # and runs `delete`, which removes it.
        wait_for(lambda: containerd.task_status(cid) in (None, "STOPPED"),
                 what="containerd to notice the dead shim")
        containerd.ctr("task", "delete", cid, check=False)
        wait_for(lambda: not os.path.exists(path), what="the socket file to be removed")
    finally:
        containerd.remove_container(cid)


def test_task_whose_bundle_is_gone_is_reaped(graced_containerd: PrivateContainerd,
                                             busybox_image: BusyboxImage,
                                             unique_id: str) -> None:
    """What containerd does to a task it gives up while the daemon still holds it (the daemon
    finished a Create containerd no longer waited for): run ``delete``, remove the bundle. The
    daemon kills and deletes the task, then exits. Here the bundle is moved aside instead of
    removed, and put back for containerd's own clean-up."""
    ctd, cid = graced_containerd, unique_id
    ctd.ctr("run", "-d", "--runtime", RUNTIME, busybox_image.ref, cid, "sleep", "120")
    bundle = ctd.bundle_dir(cid)
    away = bundle.with_name(f"{cid}.away")
    pid = ctd.shim_pid(cid)
    assert pid is not None
    path = socket_of(ctd, cid)
    shim = shutil.which("containerd-shim-proxmox-v2", path=ctd.env["PATH"])
    assert shim is not None
    try:
        done = subprocess.run([shim, "-namespace", ctd.namespace, "-address", ctd.address,
                               "-id", cid, "-bundle", str(bundle), "delete"],
                              cwd=bundle, env=ctd.env, capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
        os.rename(bundle, away)
        wait_for(lambda: not leaks.alive(pid), timeout=GRACE * 4 + 20,
                 what="the daemon to reap the orphan and exit")
        assert not os.path.exists(path)
        assert cid not in leaks.lxc_containers([ctd.lxcri_root / "lxc"])
        assert not leaks.processes_mentioning([cid])
        assert "killing and deleting it" in ctd.log_text()
    finally:
        if away.exists():
            os.rename(away, bundle)
        ctd.remove_container(cid)
