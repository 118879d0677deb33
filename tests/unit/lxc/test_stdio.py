"""runtime.stdio: opening containerd's stdio paths, and the stdin feeder's EOF semantics."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from runtime import errdefs
from runtime.stdio import open_stdio
from runtime.types import Stdio


def test_empty_paths_mean_dev_null() -> None:
    io = open_stdio(Stdio())
    assert (io.stdin, io.stdout, io.stderr) == (None, None, None)


def test_missing_fifo_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(errdefs.NotFound, match="stdout: .*no such file"):
        open_stdio(Stdio(stdout=str(tmp_path / "nope")))


def test_relative_path_and_binary_uri(tmp_path: Path) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="stderr"):
        open_stdio(Stdio(stderr="relative/fifo"))
    with pytest.raises(errdefs.NotImplementedErr, match="binary://"):
        open_stdio(Stdio(stdout="binary:///usr/bin/logger?a=b"))


def test_regular_file_path_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "plain"
    f.write_text("")
    with pytest.raises(errdefs.InvalidArgument, match="not a FIFO"):
        open_stdio(Stdio(stdout=str(f)))


def test_output_fifo_open_never_blocks_without_a_reader(tmp_path: Path) -> None:
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    io = open_stdio(Stdio(stdout=f"fifo://{fifo}"))  # no client reader: O_RDWR does not block
    assert io.stdout is not None
    os.write(io.stdout, b"x")
    io.close()


def test_file_uri_creates_parents_and_file(tmp_path: Path) -> None:
    log = tmp_path / "a/b/c.log"
    io = open_stdio(Stdio(stdout=f"file://{log}"))
    io.close()
    assert oct(log.stat().st_mode & 0o777) == "0o644"
    assert oct(log.parent.stat().st_mode & 0o777) == "0o755"


def test_file_uri_shares_one_handle_and_appends(tmp_path: Path) -> None:
    log = tmp_path / "logs/c.log"
    log.parent.mkdir()
    log.write_text("old\n")
    uri = f"file://{log}"
    io = open_stdio(Stdio(stdout=uri, stderr=uri))
    assert io.stdout == io.stderr and io.stdout is not None
    os.write(io.stdout, b"new\n")
    io.close()
    assert log.read_text() == "old\nnew\n"


@pytest.mark.asyncio
async def test_stdin_waits_for_the_client_then_forwards_data_and_eof(tmp_path: Path) -> None:
    fifo = tmp_path / "in"
    os.mkfifo(fifo)
    io = open_stdio(Stdio(stdin=str(fifo)))
    child_end = os.dup(io.stdin or -1)  # what the child would hold
    io.spawned()
    os.set_blocking(child_end, False)
    await asyncio.sleep(0.1)  # no writer yet: the child must not see EOF
    with pytest.raises(BlockingIOError):
        os.read(child_end, 10)
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    os.write(writer, b"data\n")
    os.close(writer)
    await asyncio.sleep(0.1)
    assert os.read(child_end, 10) == b"data\n"
    assert os.read(child_end, 10) == b""  # the client's EOF reached the child
    os.close(child_end)
    await io.aclose()


@pytest.mark.asyncio
async def test_close_stdin_gives_the_child_eof(tmp_path: Path) -> None:
    fifo = tmp_path / "in"
    os.mkfifo(fifo)
    io = open_stdio(Stdio(stdin=str(fifo)))
    child_end = os.dup(io.stdin or -1)
    io.spawned()
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # the client stays connected
    io.close_stdin()
    await asyncio.sleep(0.05)
    assert os.read(child_end, 10) == b""
    os.close(writer)
    os.close(child_end)
    await io.aclose()
