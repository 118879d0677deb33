"""Issue acceptance: the rest of the Task API on LXC — exec, terminals, pause/resume, pids,
metrics, update, OOM and one shim per pod — through a private containerd and ``ctr``."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protos.containerd.task.v2 import shim_pb2
from shim.ttrpc import Client
from tests.harness import leaks
from tests.harness.containerd import PrivateContainerd
from tests.harness.events import Events
from tests.harness.fixtures import BusyboxImage
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

RUNTIME = "io.containerd.proxmox.v2"
TASK = "containerd.task.v2.Task"


@pytest.fixture
def running(containerd: PrivateContainerd, busybox_image: BusyboxImage,
            unique_id: str) -> Iterator[str]:
    """A detached container running ``sleep 120``."""
    containerd.ctr("run", "-d", "--runtime", RUNTIME, busybox_image.ref, unique_id,
                   "sleep", "120")
    yield unique_id
    containerd.remove_container(unique_id)


def task_pid(ctd: PrivateContainerd, id: str) -> int:
    line = next(ln for ln in ctd.ctr("task", "ls").stdout.splitlines() if ln.split()[:1] == [id])
    return int(line.split()[1])


# -- exec ------------------------------------------------------------------------------------


@pytest.mark.pve9  # also in Debian 13 / LXC 6 / systemd (issue 16)
def test_exec_exit_status_output_and_stdin(containerd: PrivateContainerd, running: str) -> None:
    r = containerd.ctr("task", "exec", "--exec-id", "e1", running, "sh", "-c",
                       "echo from-exec; exit 3", check=False)
    assert (r.returncode, r.stdout) == (3, "from-exec\n"), r.stderr
    r = containerd.ctr("task", "exec", "--exec-id", "e2", running, "head", "-n", "1",
                       input="line one\nline two\n", check=False)
    assert (r.returncode, r.stdout) == (0, "line one\n"), r.stderr
    r = containerd.ctr("task", "exec", "--exec-id", "e3", "--cwd", "/tmp", running, "pwd",
                       check=False)
    assert (r.returncode, r.stdout) == (0, "/tmp\n"), r.stderr


@pytest.mark.pve9  # also in Debian 13 / LXC 6 / systemd (issue 16)
def test_exec_errors(containerd: PrivateContainerd, running: str,
                     busybox_image: BusyboxImage, unique_id: str) -> None:
    r = containerd.ctr("task", "exec", "--exec-id", "bad", running, "no-such-program",
                       check=False)
    assert r.returncode != 0 and 'exec: "no-such-program"' in r.stderr, r.stderr
    # An exec into a stopped container is refused with FailedPrecondition.
    stopped = f"{unique_id}-s"
    containerd.ctr("run", "-d", "--runtime", RUNTIME, busybox_image.ref, stopped, "true")
    try:
        wait_for(lambda: containerd.task_status(stopped) == "STOPPED", what="STOPPED")
        r = containerd.ctr("task", "exec", "--exec-id", "late", stopped, "true", check=False)
        assert r.returncode != 0 and "not running" in r.stderr, r.stderr
    finally:
        containerd.remove_container(stopped)


def test_exec_events_in_contract_order(containerd: PrivateContainerd,
                                       busybox_image: BusyboxImage, unique_id: str) -> None:
    events = Events(containerd)
    cid = unique_id
    try:
        containerd.ctr("run", "-d", "--runtime", RUNTIME, busybox_image.ref, cid,
                       "sleep", "120")
        containerd.ctr("task", "exec", "--exec-id", "quick", cid, "true")
        # A long exec still running when the init dies: its exit must come first.
        long = subprocess.Popen(["ctr", "--address", containerd.address, "task", "exec",
                                 "--exec-id", "long", cid, "sleep", "100"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for(lambda: any(t == "/tasks/exec-started" and e.get("exec_id") == "long"
                             for t, e in events.of(cid)), what="exec-started")
        containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
        assert long.wait(timeout=30) == 137
        wait_for(lambda: containerd.task_status(cid) == "STOPPED", what="STOPPED")
        containerd.remove_container(cid)
        wait_for(lambda: any(t == "/tasks/delete" for t, _ in events.of(cid)), what="delete")
    finally:
        events.close()
        containerd.remove_container(cid)
    seq = [(t, e.get("exec_id") or e.get("id")) for t, e in events.of(cid)]
    assert seq == [
        ("/tasks/create", None), ("/tasks/start", None),
        ("/tasks/exec-added", "quick"), ("/tasks/exec-started", "quick"), ("/tasks/exit", "quick"),
        ("/tasks/exec-added", "long"), ("/tasks/exec-started", "long"), ("/tasks/exit", "long"),
        ("/tasks/exit", cid), ("/tasks/delete", None)], seq


@pytest.mark.pve9  # also in Debian 13 / LXC 6 / systemd (issue 16)
def test_ps_lists_init_and_exec(containerd: PrivateContainerd, running: str) -> None:
    exec_ = subprocess.Popen(["ctr", "--address", containerd.address, "task", "exec",
                              "--exec-id", "sleeper", running, "sleep", "60"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        pid = task_pid(containerd, running)

        def listed() -> bool:
            out = containerd.ctr("task", "ps", running).stdout
            # ctr 1.6 prints the exec's ProcessDetails as a Go struct (ExecID:sleeper), ctr 1.7
            # (Debian 13) in protobuf text format (exec_id:"sleeper").
            return str(pid) in out and ("ExecID:sleeper" in out or 'exec_id:"sleeper"' in out)

        wait_for(listed, what="ctr task ps to list the exec")
        out = containerd.ctr("task", "ps", running).stdout
        exec_pid = int(next(ln.split()[0] for ln in out.splitlines() if "sleeper" in ln))
        assert "sleep 60" in Path(f"/proc/{exec_pid}/cmdline").read_text().replace("\0", " ")
    finally:
        exec_.kill()
        exec_.wait()


# -- terminals -------------------------------------------------------------------------------


def run_on_pty(argv: list[str], rows: int, cols: int, resize_to: tuple[int, int] | None = None,
               after: float = 1.0, timeout: float = 30) -> tuple[int, str]:
    """Run ``argv`` with a test-owned pty as its controlling terminal; optionally resize the
    pty ``after`` seconds. Returns (exit status, output)."""
    master, slave = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def ctty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True, preexec_fn=ctty)
    os.close(slave)
    out = b""
    start = time.monotonic()
    resized = resize_to is None
    try:
        while time.monotonic() - start < timeout:
            if not resized and time.monotonic() - start > after:
                r, c = resize_to  # type: ignore[misc]
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", r, c, 0, 0))
                resized = True
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    break
                if not data:
                    break
                out += data
            elif proc.poll() is not None:
                break
        # Carriage returns are the terminals' line discipline (each pty on the way adds one
        # before "\n"); what the user sees is the same.
        return proc.wait(timeout=10), out.decode(errors="replace").replace("\r", "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_run_with_terminal(containerd: PrivateContainerd, busybox_image: BusyboxImage,
                           unique_id: str) -> None:
    try:
        rc, out = run_on_pty(
            ["ctr", "--address", containerd.address, "run", "-t", "--rm", "--runtime", RUNTIME,
             busybox_image.ref, unique_id, "sh", "-c",
             # ctr sends the first ResizePty right after Start; the second follows our resize.
             "tty; sleep 1; stty size; sleep 2.5; stty size; exit 4"],
            rows=24, cols=80, resize_to=(40, 132), after=2.0)
    finally:
        containerd.remove_container(unique_id)
    assert rc == 4, out
    assert re.search(r"^/dev/pts/\d+\r?$", out, re.M), out
    sizes = re.findall(r"^(\d+) (\d+)\r?$", out, re.M)
    assert sizes == [("24", "80"), ("40", "132")], out


def test_exec_with_terminal(containerd: PrivateContainerd, running: str) -> None:
    rc, out = run_on_pty(["ctr", "--address", containerd.address, "task", "exec", "-t",
                          "--exec-id", "tty1", running, "sh", "-c",
                          # ctr sends the size with ResizePty right after Start.
                          "tty; sleep 1; stty size; exit 2"],
                         rows=30, cols=100)
    assert rc == 2, out
    assert re.search(r"/dev/pts/\d+", out), out
    assert "30 100" in out, out


# -- pause, metrics, update ------------------------------------------------------------------

COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done"


def read_counter(pid: int) -> int:
    text = Path(f"/proc/{pid}/root/tmp/count").read_text().strip()
    return int(text or 0)


@pytest.mark.pve9  # also in Debian 13 / LXC 6 / systemd (issue 16)
def test_pause_and_resume(containerd: PrivateContainerd, busybox_image: BusyboxImage,
                          unique_id: str) -> None:
    events = Events(containerd)
    try:
        containerd.ctr("run", "-d", "--runtime", RUNTIME, busybox_image.ref, unique_id,
                       "sh", "-c", COUNTER)
        pid = task_pid(containerd, unique_id)
        wait_for(lambda: Path(f"/proc/{pid}/root/tmp/count").exists(), what="the counter")
        containerd.ctr("task", "pause", unique_id)
        assert containerd.task_status(unique_id) == "PAUSED"
        frozen = read_counter(pid)
        time.sleep(0.6)
        assert read_counter(pid) == frozen
        containerd.ctr("task", "resume", unique_id)
        assert containerd.task_status(unique_id) == "RUNNING"
        wait_for(lambda: read_counter(pid) > frozen + 2, what="the counter to advance")
        r = containerd.ctr("task", "resume", unique_id, check=False)
        assert r.returncode != 0  # resuming a running task is refused
        wait_for(lambda: [t for t, _ in events.of(unique_id)
                          if t in ("/tasks/paused", "/tasks/resumed")] ==
                 ["/tasks/paused", "/tasks/resumed"], what="paused/resumed events")
    finally:
        events.close()
        containerd.remove_container(unique_id)


def memory_usage(ctd: PrivateContainerd, id: str) -> int:
    out = ctd.ctr("task", "metrics", id).stdout
    m = re.search(r"^memory\.usage_in_bytes\s+(\d+)", out, re.M) or re.search(
        r"^memory\.usage\s+(\d+)", out, re.M)
    assert m, out
    return int(m.group(1))


@pytest.mark.pve9  # also in Debian 13 / LXC 6 / systemd (issue 16)
def test_metrics_memory_grows(containerd: PrivateContainerd, busybox_image: BusyboxImage,
                              unique_id: str) -> None:
    containerd.ctr("run", "-d", "--runtime", RUNTIME, busybox_image.ref, unique_id,
                   "sh", "-c", "sleep 1.5; head -c 40000000 /dev/zero > /dev/shm/blob; "
                   "sleep 60")
    try:
        before = memory_usage(containerd, unique_id)
        out = containerd.ctr("task", "metrics", unique_id).stdout
        assert "cpuacct.usage" in out or "cpu.usage_usec" in out, out
        assert "pids.current" in out, out
        wait_for(lambda: memory_usage(containerd, unique_id) > before + 30_000_000,
                 what="memory usage to grow by the 40 MB the container wrote")
    finally:
        containerd.remove_container(unique_id)


async def shim_call(ctd: PrivateContainerd, id: str, method: str, req: object,
                    resp: type) -> object:
    address = (ctd.bundle_dir(id) / "address").read_text()
    client = await Client.connect(address)
    try:
        return await client.call(TASK, method, req, resp, timeout=10)
    finally:
        await client.close()


@pytest.mark.pve9  # also in Debian 13 / LXC 6 / systemd (issue 16)
def test_update_lowers_pids_limit(containerd: PrivateContainerd, running: str) -> None:
    from google.protobuf import any_pb2, empty_pb2

    resources = any_pb2.Any(
        type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
        value=json.dumps({"pids": {"limit": 4}}).encode())
    asyncio.run(shim_call(containerd, running, "Update",
                          shim_pb2.UpdateTaskRequest(id=running, resources=resources),
                          empty_pb2.Empty))
    out = containerd.ctr("task", "metrics", running).stdout
    assert re.search(r"^pids\.limit\s+4\s*$", out, re.M), out
    # The container feels it: more processes than the limit cannot be forked.
    r = containerd.ctr("task", "exec", "--exec-id", "forks", running, "sh", "-c",
                       "for i in 1 2 3 4 5 6; do sleep 5 & done; wait", check=False)
    assert "fork" in (r.stdout + r.stderr).lower(), (r.stdout, r.stderr)


@pytest.mark.pve9  # also in Debian 13 / LXC 6 / systemd (issue 16)
def test_oom_is_reported(containerd: PrivateContainerd, busybox_image: BusyboxImage,
                         unique_id: str) -> None:
    events = Events(containerd)
    try:
        r = containerd.ctr("run", "--rm", "--runtime", RUNTIME, "--memory-limit",
                           str(32 * 1024 * 1024), busybox_image.ref, unique_id,
                           # One process that grows until the OOM killer kills it, once.
                           "tail", "/dev/zero",
                           check=False, timeout=120)
        assert r.returncode == 137, (r.returncode, r.stdout, r.stderr)
        events.assert_one_oom_before_exit(unique_id)
    finally:
        events.close()
        containerd.remove_container(unique_id)


# -- one shim per pod ------------------------------------------------------------------------


def test_pod_shares_one_shim(containerd: PrivateContainerd, busybox_image: BusyboxImage,
                             unique_id: str) -> None:
    pod, other = f"{unique_id}-pod", f"{unique_id}-other"
    ids = [f"{unique_id}-a", f"{unique_id}-b", f"{unique_id}-c"]
    try:
        for cid, sandbox in zip(ids, (pod, pod, other), strict=True):
            containerd.ctr("run", "-d", "--runtime", RUNTIME, "--annotation",
                           f"io.kubernetes.cri.sandbox-id={sandbox}", busybox_image.ref, cid,
                           "sleep", "120")
        shims = [containerd.shim_pid(cid) for cid in ids]
        assert None not in shims
        assert shims[0] == shims[1] and shims[2] != shims[0], shims
        pod_shim = shims[0]
        assert pod_shim is not None
        containerd.remove_container(ids[0])
        assert leaks.alive(pod_shim)  # still serving b
        assert containerd.task_status(ids[1]) == "RUNNING"
        containerd.remove_container(ids[1])
        wait_for(lambda: not leaks.alive(pod_shim), what="the pod's shim to exit")
        assert containerd.task_status(ids[2]) == "RUNNING"
    finally:
        for cid in ids:
            containerd.remove_container(cid)
