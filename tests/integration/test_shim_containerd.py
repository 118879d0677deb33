"""Issue acceptance: containerd 1.6 runs OCI containers as LXC containers through
``io.containerd.proxmox.v2``. Every test drives a private containerd with ``ctr``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from protos.containerd.task.v2 import shim_pb2
from tests.harness import leaks
from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import BusyboxImage
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

RUNTIME = "io.containerd.proxmox.v2"


def run(ctd: PrivateContainerd, image: BusyboxImage, id: str, *cmd: str,
        input: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
    return ctd.ctr("run", "--rm", "--runtime", RUNTIME, image.ref, id, *cmd, input=input,
                   check=check, timeout=60)


def residue(ctd: PrivateContainerd, id: str, settle: float = 10.0) -> list[str]:
    """What is left of container ``id``: LXC container, mounts, processes, state, once the
    shim had ``settle`` seconds to exit. containerd does not wait for a shim's process to end
    after its Shutdown call (neither runc's nor ours), so ``ctr`` may return a few ms before
    the daemon, whose process title names the container, is gone."""
    deadline = time.monotonic() + settle
    while True:
        left = _residue(ctd, id)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _residue(ctd: PrivateContainerd, id: str) -> list[str]:
    left = [f"LXC container {c}" for c in leaks.lxc_containers([ctd.lxcri_root / "lxc"])
            if c == id]
    left += [f"mount {m}" for m in leaks.mounts_under([ctd.bundle_dir(id), ctd.lxcri_root])]
    left += [f"process {p}: {c}" for p, c in leaks.processes_mentioning([id]).items()]
    left += [f"cgroup {c}" for c in leaks.cgroups_named([id])]
    if (ctd.lxcri_root / "containers" / ctd.namespace / id).exists():
        left.append("shim state directory")
    return left


@pytest.fixture
def cid(containerd: PrivateContainerd, unique_id: str) -> Iterator[str]:
    yield unique_id
    containerd.remove_container(unique_id)


@pytest.mark.pve9  # also in Debian 13 / LXC 6 / systemd (issue 16)
def test_echo_hello(containerd: PrivateContainerd, busybox_image: BusyboxImage, cid: str) -> None:
    r = run(containerd, busybox_image, cid, "echo", "hello")
    assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr
    assert residue(containerd, cid) == []


@pytest.mark.pve9  # also in Debian 13 / LXC 6 / systemd (issue 16)
def test_exit_status_passes_through(containerd: PrivateContainerd,
                                    busybox_image: BusyboxImage, cid: str) -> None:
    r = run(containerd, busybox_image, cid, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert r.returncode == 7, r.stderr
    assert r.stdout == "out\n"
    assert "err\n" in r.stderr


@pytest.mark.pve9  # also in Debian 13 / LXC 6 / systemd (issue 16)
def test_sigkill_reports_137(containerd: PrivateContainerd, busybox_image: BusyboxImage,
                             cid: str) -> None:
    proc = subprocess.Popen(
        ["ctr", "--address", containerd.address, "-n", containerd.namespace, "run", "--rm",
         "--runtime", RUNTIME, busybox_image.ref, cid, "sleep", "60"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: containerd.task_status(cid) == "RUNNING", what="RUNNING")
        containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
        assert proc.wait(timeout=30) == 137
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.pve9  # also in Debian 13 / LXC 6 / systemd (issue 16)
def test_stdin_reaches_the_container(containerd: PrivateContainerd,
                                     busybox_image: BusyboxImage, cid: str) -> None:
    r = run(containerd, busybox_image, cid, "head", "-n", "1", input="abc\ndef\n")
    assert (r.returncode, r.stdout) == (0, "abc\n"), r.stderr


@pytest.mark.pve9  # also in Debian 13 / LXC 6 / systemd (issue 16)
def test_detached_lifecycle_and_host_pid(containerd: PrivateContainerd,
                                         busybox_image: BusyboxImage, cid: str) -> None:
    containerd.ctr("run", "-d", "--runtime", RUNTIME, busybox_image.ref, cid, "sleep", "60")
    line = next(ln for ln in containerd.ctr("task", "ls").stdout.splitlines()
                if ln.split()[:1] == [cid])
    _, pid_s, status = line.split()
    pid = int(pid_s)
    assert status == "RUNNING"
    nspid = re.search(r"^NSpid:\s+(.*)$", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert nspid is not None and nspid.group(1).split() == [str(pid), "1"]
    # The shim knows every process of the container.
    ps = containerd.ctr("task", "ps", cid).stdout
    assert str(pid) in ps
    # sleep is PID 1 without a TERM handler: SIGTERM is dropped (as under runc); KILL ends it.
    containerd.ctr("task", "kill", cid)
    containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
    wait_for(lambda: containerd.task_status(cid) == "STOPPED", what="STOPPED")
    shim = containerd.shim_pid(cid)
    containerd.ctr("task", "rm", cid)
    containerd.ctr("container", "rm", cid)
    assert not leaks.alive(pid)
    wait_for(lambda: shim is None or not leaks.alive(shim), what="the shim to exit")
    assert residue(containerd, cid) == []


def parse_events(text: str, id: str) -> list[tuple[str, dict[str, object]]]:
    out = []
    for line in text.splitlines():
        m = re.search(r" (/tasks/\S+) (\{.*\})$", line)
        if m and f'"container_id":"{id}"' in m.group(2):
            out.append((m.group(1), json.loads(m.group(2))))
    return out


def test_events_in_contract_order(containerd: PrivateContainerd,
                                  busybox_image: BusyboxImage, cid: str) -> None:
    watcher = subprocess.Popen(["ctr", "--address", containerd.address, "events"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(watcher.stdout or []), daemon=True)
    reader.start()
    try:
        time.sleep(0.3)  # let the subscription settle
        r = run(containerd, busybox_image, cid, "sh", "-c", "exit 5")
        assert r.returncode == 5
        wait_for(lambda: any("/tasks/delete" in ln and cid in ln for ln in lines),
                 what="/tasks/delete")
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    events = parse_events("".join(lines), cid)
    topics = [t for t, _ in events]
    assert topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"], topics
    pids = {e.get("pid") for _, e in events}
    assert len(pids) == 1 and isinstance(next(iter(pids)), int)
    assert events[2][1]["exit_status"] == 5 and events[2][1]["id"] == cid
    assert events[3][1]["exit_status"] == 5


def test_ten_concurrent_runs(containerd: PrivateContainerd,
                             busybox_image: BusyboxImage, unique_id: str) -> None:
    ids = [f"{unique_id}-{i}" for i in range(10)]
    try:
        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(
                lambda i: run(containerd, busybox_image, ids[i], "echo", f"output-{i}"),
                range(10)))
        for i, r in enumerate(results):
            assert (r.returncode, r.stdout) == (0, f"output-{i}\n"), r.stderr
    finally:
        for id in ids:
            containerd.remove_container(id)
    for id in ids:
        assert residue(containerd, id) == []


def test_missing_program_is_a_clear_error(containerd: PrivateContainerd,
                                          busybox_image: BusyboxImage, cid: str) -> None:
    r = run(containerd, busybox_image, cid, "no-such-program")
    assert r.returncode != 0
    assert 'exec: "no-such-program"' in r.stderr and "not found" in r.stderr, r.stderr
    assert containerd.task_status(cid) is None
    assert residue(containerd, cid) == []


def test_invalid_config_json_is_a_clear_error(containerd: PrivateContainerd,
                                              busybox_image: BusyboxImage, cid: str,
                                              tmp_path: Path) -> None:
    # ctr takes a whole spec from --config; one without process.args reaches the shim as is.
    spec = {"ociVersion": "1.0.2", "process": {"cwd": "/", "args": []},
            "root": {"path": "rootfs"}, "linux": {"namespaces": [{"type": "pid"}]}}
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(spec))
    # With --config, ctr takes only the container id (no image): the spec is used as is.
    r = containerd.ctr("run", "--rm", "--runtime", RUNTIME, "--config", str(cfg), cid,
                       check=False)
    assert r.returncode != 0
    assert "process.args" in r.stderr, r.stderr
    assert residue(containerd, cid) == []


def test_missing_rootfs_is_a_clear_error(containerd: PrivateContainerd, cid: str,
                                         tmp_path: Path) -> None:
    missing = tmp_path / "no-such-rootfs"
    r = containerd.ctr("run", "--rm", "--runtime", RUNTIME, "--rootfs", str(missing), cid,
                       "echo", "hi", check=False)
    assert r.returncode != 0
    assert str(missing) in r.stderr or "rootfs" in r.stderr, r.stderr
    assert residue(containerd, cid) == []


def shim_delete(ctd: PrivateContainerd, id: str,
                bundle: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["containerd-shim-proxmox-v2", "-namespace", ctd.namespace, "-address", ctd.address,
         "-publish-binary", "/usr/bin/containerd", "-id", id, "-bundle", str(bundle), "delete"],
        cwd=bundle, env=ctd.env, capture_output=True, timeout=10)


def test_delete_action_is_idempotent(containerd: PrivateContainerd,
                                     busybox_image: BusyboxImage, cid: str) -> None:
    containerd.ctr("run", "-d", "--runtime", RUNTIME, busybox_image.ref, cid, "sleep", "60")
    bundle = containerd.bundle_dir(cid)
    pid = int(containerd.ctr("task", "ls").stdout.split(cid)[1].split()[0])
    started = time.monotonic()
    first = shim_delete(containerd, cid, bundle)
    elapsed = time.monotonic() - started
    second = shim_delete(containerd, cid, bundle)
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    resp = shim_pb2.DeleteResponse.FromString(first.stdout)
    assert resp.pid == pid and resp.exit_status == 137
    shim_pb2.DeleteResponse.FromString(second.stdout)
    assert elapsed < 5
    assert not leaks.alive(pid)


def test_containerd_restart_keeps_the_task(fresh_containerd: PrivateContainerd,
                                           busybox_image: BusyboxImage, unique_id: str) -> None:
    ctd, cid = fresh_containerd, unique_id
    ctd.ctr("run", "-d", "--runtime", RUNTIME, busybox_image.ref, cid, "sleep", "120")
    shim = ctd.shim_pid(cid)
    assert shim is not None
    ctd.restart()
    assert ctd.task_status(cid) == "RUNNING"
    assert leaks.alive(shim)
    ctd.ctr("task", "kill", "-s", "SIGKILL", cid)
    wait_for(lambda: ctd.task_status(cid) == "STOPPED", what="STOPPED after restart")
    ctd.ctr("task", "rm", cid)
    ctd.ctr("container", "rm", cid)
    assert residue(ctd, cid) == []


def test_garbage_on_the_shim_socket(containerd: PrivateContainerd,
                                    busybox_image: BusyboxImage, cid: str) -> None:
    containerd.ctr("run", "-d", "--runtime", RUNTIME, busybox_image.ref, cid, "sleep", "60")
    address = (containerd.bundle_dir(cid) / "address").read_text()
    assert not address.endswith("\n")
    for chunk in (os.urandom(4096), b"\x00\x00\x00\x05\x00\x00\x00\x02\x01\x00garbage",
                  b"\xff" * 10):
        s = socket.socket(socket.AF_UNIX)
        s.connect(address.removeprefix("unix://"))
        s.sendall(chunk)
        s.close()
    assert containerd.task_status(cid) == "RUNNING"
    containerd.ctr("task", "kill", "-s", str(int(signal.SIGKILL)), cid)
    wait_for(lambda: containerd.task_status(cid) == "STOPPED", what="STOPPED")


def test_zygote_serves_later_shims_and_fallback_works(busybox_image: BusyboxImage,
                                                      unique_id: str) -> None:
    """The first shim is forked by `start` itself (no zygote yet) and starts a zygote; later
    shims are forked by the zygote. With the zygote disabled every shim comes from `start`."""
    for zygote in ("1", "0"):
        with PrivateContainerd(env={"PROXMOX_LXCRI_ZYGOTE": zygote}) as ctd:
            ctd.start()
            ctd.import_image(busybox_image.tar)
            for i in range(2):
                r = ctd.ctr("run", "--rm", "--runtime", RUNTIME, busybox_image.ref,
                            f"{unique_id}-{zygote}{i}", "echo", f"run {i}", check=False)
                assert (r.returncode, r.stdout) == (0, f"run {i}\n"), r.stderr
            zygotes = list((ctd.lxcri_root).glob("zygote-*.sock"))
            assert len(zygotes) == (1 if zygote == "1" else 0), zygotes
