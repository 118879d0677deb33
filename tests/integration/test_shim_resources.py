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
import random
import select
import socket
import struct
from collections.abc import Iterator

import pytest

from protos.containerd.task.v2 import shim_pb2
from protos.containerd.types.task import task_pb2
from protos.ttrpc import request_pb2
from shim.ttrpc import Client
from shim.ttrpc._frame import MAX_DATA, encode_frame
from tests.harness import leaks
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

#: Methods whose fuzzed payloads are made undecodable: a random payload that happened to decode
#: could create, kill or shut down for real. The others get arbitrary bytes.
MUTATING = ("Create", "Start", "Delete", "Kill", "Exec", "Update", "Pause", "Resume",
            "Checkpoint", "Shutdown", "CloseIO", "ResizePty")
READING = ("State", "Pids", "Stats", "Wait", "Connect")


def undecodable(rng: random.Random) -> bytes:
    """A length-delimited field 1 announcing more bytes than follow: never decodes."""
    body = rng.randbytes(rng.randrange(0, 40))
    return b"\x0a" + bytes([len(body) + 1 + rng.randrange(0, 100)]) + body


def header(length: int, stream_id: int, msg_type: int, flags: int = 0) -> bytes:
    return struct.pack(">IIBB", length, stream_id, msg_type, flags)


def fuzz_case(rng: random.Random, task_id: str) -> bytes:
    kind = rng.randrange(12)
    if kind == 0:  # random bytes
        return rng.randbytes(rng.randrange(0, 300))
    if kind == 1:  # a truncated header
        return header(rng.randrange(0, 100), 1, 1)[: rng.randrange(1, 10)]
    if kind == 2:  # reserved byte set: the stream cannot be resynchronised
        return header(rng.randrange(1 << 24, 1 << 32), 1, 1) + rng.randbytes(20)
    if kind == 3:  # oversized, with part of its data, then a valid request
        n = rng.randrange(MAX_DATA + 1, 1 << 24)
        return header(n, 1, 1) + rng.randbytes(rng.randrange(0, 4096))
    if kind == 4:  # a header announcing more than follows
        return header(rng.randrange(50, 5000), 1, 1) + rng.randbytes(rng.randrange(0, 40))
    if kind == 5:  # bad stream ids: zero, even, repeated, decreasing
        ids = rng.choice([[0], [2], [1, 1], [5, 3], [0xFFFFFFFF, 1]])
        return b"".join(request(i, "State", b"") for i in ids)
    if kind == 6:  # unknown service or method
        svc = rng.choice([TASK, "no.such.Service", "", "\u00e9" * 30, TASK + "x"])
        return request(1, rng.choice(["Nope", "", "State\x00", "a" * 500]), b"", service=svc)
    if kind == 7:  # a Request that is not protobuf
        data = rng.randbytes(rng.randrange(1, 200))
        return encode_frame(1, 1, data)
    if kind == 8:  # garbage payload for a reading method
        return request(1, rng.choice(READING), rng.randbytes(rng.randrange(0, 200)))
    if kind == 9:  # undecodable payload for a mutating method
        return request(1, rng.choice(MUTATING), undecodable(rng))
    if kind == 10:  # unknown message types and flags, then a valid call
        t = rng.choice([0, 2, 3, 4, 0xFF])
        return (encode_frame(1, t, rng.randbytes(rng.randrange(0, 30)), rng.randrange(256))
                + request(3, "State", shim_pb2.StateRequest(id=task_id).SerializeToString()))
    # many requests for unknown tasks, pipelined
    return b"".join(request(2 * i + 1, rng.choice(READING),
                            shim_pb2.StateRequest(id=f"x{i}").SerializeToString())
                    for i in range(rng.randrange(1, 50)))


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
    rng = random.Random(FUZZ_SEED)
    for _ in range(FUZZ_CASES):
        run_case(path, fuzz_case(rng, running))
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
