"""``delete`` removes the socket of a dead daemon, and only that (shim.manager)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shim.flags import parse
from shim.manager import SOCKET_DIR, remove_stale_socket, socket_address, task_socket_path

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason=f"writes to {SOCKET_DIR}")


@pytest.fixture
def sock_path() -> Iterator[str]:
    os.makedirs(SOCKET_DIR, mode=0o711, exist_ok=True)
    path = os.path.join(SOCKET_DIR, secrets.token_hex(32))
    try:
        yield path
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def bound(path: str, *, listening: bool) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    if listening:
        s.listen(1)
    return s


def test_dead_daemons_socket_is_removed(sock_path: str) -> None:
    bound(sock_path, listening=True).close()  # the daemon died: the file stays
    assert os.path.exists(sock_path)
    assert remove_stale_socket(sock_path)
    assert not os.path.exists(sock_path)
    assert not remove_stale_socket(sock_path)  # idempotent


def test_live_daemons_socket_is_kept(sock_path: str) -> None:
    s = bound(sock_path, listening=True)
    try:
        assert not remove_stale_socket(sock_path)
        assert os.path.exists(sock_path)
    finally:
        s.close()


def test_only_our_socket_names_are_touched(sock_path: str) -> None:
    short = tempfile.mkdtemp(prefix="lxcri-", dir="/tmp")  # sun_path is at most 108 bytes
    try:
        elsewhere = os.path.join(short, secrets.token_hex(32))
        bound(elsewhere, listening=False).close()
        assert not remove_stale_socket(elsewhere)  # not under SOCKET_DIR
        assert os.path.exists(elsewhere)
    finally:
        shutil.rmtree(short)
    odd = os.path.join(SOCKET_DIR, "not-a-digest")
    assert not remove_stale_socket(odd)
    with open(sock_path, "w"):
        pass  # a regular file under our name
    assert not remove_stale_socket(sock_path)
    assert os.path.exists(sock_path)


def test_task_socket_path_prefers_the_address_file(tmp_path: Path) -> None:
    flags = parse(["-namespace", "ns", "-address", "/run/c.sock", "-id", "t1", "delete"])
    computed = socket_address("/run/c.sock", "ns", "t1").removeprefix("unix://")
    assert task_socket_path(flags, str(tmp_path)) == computed  # start died before writing it
    (tmp_path / "address").write_text("unix:///run/containerd/s/abc")
    assert task_socket_path(flags, str(tmp_path)) == "/run/containerd/s/abc"
