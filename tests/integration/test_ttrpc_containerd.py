"""Our ttrpc Client against containerd 1.6's real events service (shim-protocol.md §4.1).

Starts a private containerd as root in a short temporary directory, watches ``ctr events`` and
publishes a ``TaskOOM`` envelope through ``containerd.services.events.ttrpc.v1.Events/Forward``,
exactly as the shim will.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2

from protos.containerd.events import task_pb2
from protos.containerd.services.ttrpc.events.v1 import events_pb2
from shim.ttrpc import Client, Code, RpcError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a private containerd"),
    pytest.mark.skipif(
        shutil.which("containerd") is None or shutil.which("ctr") is None,
        reason="containerd and ctr are not installed",
    ),
]

EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@dataclass
class Containerd:
    dir: Path
    grpc: Path
    ttrpc: Path
    log: Path
    proc: subprocess.Popen[bytes]


def _config(base: Path) -> str:
    return (
        "version = 2\n"
        f'root = "{base / "root"}"\n'
        f'state = "{base / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        "\n[grpc]\n"
        f'  address = "{base / "c.sock"}"\n'
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; always reaps the process."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for_sockets(ctd: Containerd) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not (ctd.grpc.is_socket() and ctd.ttrpc.is_socket()):
        if ctd.proc.poll() is not None:
            pytest.fail(f"containerd exited with {ctd.proc.returncode}:\n{ctd.log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"containerd sockets did not appear:\n{ctd.log.read_text()}")
        time.sleep(0.05)


@pytest.fixture
def containerd() -> Iterator[Containerd]:
    # Unix socket paths must stay below 108 bytes; pytest's tmp_path may be longer.
    base = Path(tempfile.mkdtemp(prefix="lxcri-", dir="/tmp"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        cfg = base / "config.toml"
        cfg.write_text(_config(base))
        log = base / "containerd.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["containerd", "--config", str(cfg)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ctd = Containerd(base, base / "c.sock", base / "c.sock.ttrpc", log, proc)
        _wait_for_sockets(ctd)
        yield ctd
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(base, ignore_errors=True)


@pytest_asyncio.fixture
async def events_output(containerd: Containerd) -> AsyncIterator[asyncio.StreamReader]:
    """``ctr events`` running against the private containerd; yields its stdout."""
    proc = await asyncio.create_subprocess_exec(
        "ctr", "--address", str(containerd.grpc), "events",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _forward_request(topic: str, event: task_pb2.TaskOOM) -> events_pb2.ForwardRequest:
    timestamp = timestamp_pb2.Timestamp()
    timestamp.GetCurrentTime()
    # The type URL is the bare message name; Any.Pack() would add the type.googleapis.com/
    # prefix, which containerd 1.6 cannot resolve (shim-protocol.md §1.10).
    payload = any_pb2.Any(type_url="containerd.events.TaskOOM", value=event.SerializeToString())
    envelope = events_pb2.Envelope(
        timestamp=timestamp, namespace="default", topic=topic, event=payload
    )
    return events_pb2.ForwardRequest(envelope=envelope)


async def _forward(client: Client, topic: str, container_id: str) -> empty_pb2.Empty:
    request = _forward_request(topic, task_pb2.TaskOOM(container_id=container_id))
    return await client.call(
        EVENTS_SERVICE, "Forward", request, empty_pb2.Empty, timeout=10,
        metadata={"containerd-namespace-ttrpc": "default"},
    )


async def _read_line_with(stdout: asyncio.StreamReader, needle: str, timeout: float) -> str | None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while line := (await stdout.readline()).decode():
                if needle in line:
                    return line
    return None


@pytest.mark.asyncio
async def test_forward_task_oom_reaches_ctr_events(
    containerd: Containerd, events_output: asyncio.StreamReader
) -> None:
    client = await Client.connect(f"unix://{containerd.ttrpc}")
    try:
        # `ctr events` subscribes asynchronously and says nothing when ready, so publish until
        # an event shows up; every Forward must succeed with an (empty) response regardless.
        line = None
        for _ in range(40):
            assert await _forward(client, "/tasks/oom", "abc") == empty_pb2.Empty()
            line = await _read_line_with(events_output, "/tasks/oom", 0.5)
            if line is not None:
                break
    finally:
        await client.close()
    assert line is not None, f"no event seen by ctr events; log:\n{containerd.log.read_text()}"
    assert "default" in line
    assert '"container_id":"abc"' in line.replace(" ", "")


@pytest.mark.asyncio
async def test_invalid_topic_is_invalid_argument(containerd: Containerd) -> None:
    async with await Client.connect(containerd.ttrpc) as client:
        with pytest.raises(RpcError) as exc:
            await _forward(client, "tasks", "abc")
        assert exc.value.code == Code.INVALID_ARGUMENT
        # containerd 1.6 answers: envelope topic "tasks": must start with '/': invalid argument
        assert "must start with '/'" in exc.value.message
        # The connection survives an error answer.
        assert await _forward(client, "/tasks/oom", "abc") == empty_pb2.Empty()
