"""Issue 12, item 7 and the ttrpc fuzz corpus: a live shim daemon, serving a running task for a
private containerd, under hostile clients on its socket.

* A flood of pipelined ``Wait`` calls on one connection: the daemon's memory stays bounded (its
  RSS from /proc) and another client is served meanwhile.
* A seeded, bounded corpus of malformed frames: random, truncated and oversized headers, bad
  stream ids, unknown services and methods, undecodable protobuf. Afterwards the same daemon
  still serves containerd and holds no more file descriptors or threads than before.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
from collections.abc import Iterator

import pytest

from protos.containerd.task.v2 import shim_pb2
from protos.containerd.types.task import task_pb2
from protos.ttrpc import request_pb2
from shim.ttrpc import Client
from shim.ttrpc._frame import encode_frame
from tests.harness import leaks, ttrpc_fuzz
from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import BusyboxImage
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

RUNTIME = "io.containerd.proxmox.v2"
TASK = "containerd.task.v2.Task"
FLOOD = 200_000
#: The daemon before the caps: +937 MB for this flood. After: a few MB for 1024 blocked Waits.
RSS_GROWTH_LIMIT_KB = 64 * 1024
FUZZ_SEED = 20261206
FUZZ_CASES = 1200


@pytest.fixture
def running(containerd: PrivateContainerd, busybox_image: BusyboxImage,
            unique_id: str) -> Iterator[str]:
    containerd.ctr("run", "-d", "--runtime", RUNTIME, busybox_image.ref, unique_id,
                   "sleep", "300")
    yield unique_id
    containerd.remove_container(unique_id)


def shim_socket(ctd: PrivateContainerd, id: str) -> str:
    return (ctd.bundle_dir(id) / "address").read_text().removeprefix("unix://")


def status_field(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def request(stream_id: int, method: str, payload: bytes, service: str = TASK) -> bytes:
    data = request_pb2.Request(service=service, method=method,
                               payload=payload).SerializeToString()
    return encode_frame(stream_id, 1, data)


def task_state(path: str, id: str) -> int:
    async def call() -> int:
        async with await Client.connect(path) as client:
            reply = await client.call(TASK, "State", shim_pb2.StateRequest(id=id),
                                      shim_pb2.StateResponse, timeout=10)
            return int(reply.status)
    return asyncio.run(asyncio.wait_for(call(), 15))


def send_until_blocked(sock: socket.socket, data: bytes, stall: float = 2.0) -> int:
    """Write ``data`` until it is all sent or the peer stopped reading for ``stall`` s."""
    sock.setblocking(False)
    view, sent = memoryview(data), 0
    while sent < len(data):
        try:
            sent += sock.send(view[sent:sent + 65536])
        except BlockingIOError:
            _, writable, _ = select.select([], [sock], [], stall)
            if not writable:
                break
    return sent


def test_wait_flood_on_one_connection_is_bounded(containerd: PrivateContainerd,
                                                 running: str) -> None:
    pid = containerd.shim_pid(running)
    assert pid is not None
    path = shim_socket(containerd, running)
    assert task_state(path, running) == task_pb2.RUNNING
    rss_before, fds_before = status_field(pid, "VmRSS"), open_fds(pid)
    wait = shim_pb2.WaitRequest(id=running).SerializeToString()
    flood = b"".join(request(2 * i + 1, "Wait", wait) for i in range(FLOOD))
    flooder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    flooder.connect(path)
    try:
        sent = send_until_blocked(flooder, flood)
        # The daemon stopped reading: most of the flood never left this side.
        assert sent < len(flood) // 2, f"{sent} of {len(flood)} bytes were taken in"
        grown = status_field(pid, "VmRSS") - rss_before
        assert grown < RSS_GROWTH_LIMIT_KB, f"the shim's RSS grew by {grown} kB"
        # Another client is served while the flood holds its connection's slots.
        assert task_state(path, running) == task_pb2.RUNNING
        r = containerd.ctr("task", "exec", "--exec-id", "during-flood", running, "echo", "ok",
                           check=False, timeout=30)
        assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    finally:
        flooder.close()
    # Closing the connection releases its handlers and its descriptor.
    wait_for(lambda: open_fds(pid) <= fds_before, what="the flood's descriptors to be closed")
    assert status_field(pid, "VmRSS") - rss_before < RSS_GROWTH_LIMIT_KB
    assert task_state(path, running) == task_pb2.RUNNING


# -- fuzz ---------------------------------------------------------------------------------------

#: Creating, killing or shutting down for real is not what this corpus is for: those methods
#: only get undecodable payloads (tests/harness/ttrpc_fuzz.py).
MUTATING = ("Create", "Start", "Delete", "Kill", "Exec", "Update", "Pause", "Resume",
            "Checkpoint", "Shutdown", "CloseIO", "ResizePty")
READING = ("State", "Pids", "Stats", "Wait", "Connect")


def run_case(path: str, data: bytes) -> None:
    """Send ``data``, close our side, read until the daemon closes its side."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return  # the daemon closed first (a framing error): fine
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            pass


def test_malformed_frames_fuzz(containerd: PrivateContainerd, running: str) -> None:
    pid = containerd.shim_pid(running)
    assert pid is not None
    path = shim_socket(containerd, running)
    assert task_state(path, running) == task_pb2.RUNNING
    fds, threads = open_fds(pid), status_field(pid, "Threads")
    rss = status_field(pid, "VmRSS")
    target = ttrpc_fuzz.Target(TASK, READING, MUTATING,
                               shim_pb2.StateRequest(id=running).SerializeToString())
    for data in ttrpc_fuzz.corpus(FUZZ_SEED, FUZZ_CASES, target):
        run_case(path, data)
    # The same daemon still serves containerd: a task call, an exec, then the removal.
    assert leaks.alive(pid) and containerd.shim_pid(running) == pid
    assert task_state(path, running) == task_pb2.RUNNING
    r = containerd.ctr("task", "exec", "--exec-id", "after-fuzz", running, "echo", "ok",
                       check=False, timeout=30)
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    # Nothing leaked: every connection's descriptor is closed, no thread was left behind.
    wait_for(lambda: open_fds(pid) <= fds, what=f"descriptors back to {fds}")
    assert status_field(pid, "Threads") <= threads + 2
    assert status_field(pid, "VmRSS") - rss < RSS_GROWTH_LIMIT_KB
