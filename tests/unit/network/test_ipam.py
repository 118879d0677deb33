"""Leases: unique under concurrency, persistent, released, and a clear error when full."""

from __future__ import annotations

import ipaddress
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

from network.config import Pool, parse_pool
from network.ipam import Ipam
from runtime.errdefs import AlreadyExists, Unavailable

A = ipaddress.IPv4Address


def pool(range_: str = "10.90.0.10-10.90.0.250") -> Pool:
    return parse_pool("p", {"bridge": "br0", "subnet": "10.90.0.0/24", "gateway": "10.90.0.1",
                            "range": range_})


def _allocate_in_child(state_dir: str, owner: str) -> str:
    return str(Ipam(Path(state_dir)).allocate(pool(), owner))


def test_fifty_concurrent_processes_get_fifty_different_addresses(tmp_path: Path) -> None:
    # Processes, like concurrent shims: each has its own lock file descriptor.
    with ProcessPoolExecutor(50, mp_context=multiprocessing.get_context("fork")) as ex:
        got = list(ex.map(_allocate_in_child, [str(tmp_path)] * 50,
                          [f"default/c{i}" for i in range(50)]))
    assert len(set(got)) == 50
    assert all(pool().usable(A(a)) for a in got)
    assert Ipam(tmp_path).leases("p") == {a: f"default/c{i}" for i, a in enumerate(got)}


def test_fifty_concurrent_threads_get_fifty_different_addresses(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path)
    start = threading.Barrier(50)

    def one(i: int) -> ipaddress.IPv4Address:
        start.wait()
        return ipam.allocate(pool(), f"default/c{i}")

    with ThreadPoolExecutor(50) as ex:
        got = list(ex.map(one, range(50)))
    assert len(set(got)) == 50


def test_leases_survive_a_restart(tmp_path: Path) -> None:
    first = Ipam(tmp_path).allocate(pool(), "default/a")
    again = Ipam(tmp_path)  # a new shim process reading the same state
    assert again.leases("p") == {str(first): "default/a"}
    assert again.allocate(pool(), "default/b") != first
    assert again.allocate(pool(), "default/a") == first  # idempotent per owner


def test_release_frees_the_address_and_is_idempotent(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path)
    addr = ipam.allocate(pool(), "default/a")
    assert ipam.release("p", "default/a") == [str(addr)]
    assert ipam.release("p", "default/a") == []
    assert ipam.leases("p") == {}


def test_round_robin_does_not_reuse_a_just_released_address(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path)
    a = ipam.allocate(pool(), "default/a")
    ipam.release("p", "default/a")
    assert ipam.allocate(pool(), "default/b") == a + 1


def test_requested_address_and_conflict(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path)
    assert ipam.allocate(pool(), "default/a", A("10.90.0.99")) == A("10.90.0.99")
    with pytest.raises(AlreadyExists, match=r"10.90.0.99 is leased to default/a"):
        ipam.allocate(pool(), "default/b", A("10.90.0.99"))
    # Auto allocation skips the reserved address.
    got = {ipam.allocate(pool("10.90.0.98-10.90.0.100"), f"default/x{i}") for i in range(2)}
    assert got == {A("10.90.0.98"), A("10.90.0.100")}


def test_full_pool_is_a_clear_error(tmp_path: Path) -> None:
    ipam, small = Ipam(tmp_path), pool("10.90.0.10-10.90.0.12")
    for i in range(3):
        ipam.allocate(small, f"default/c{i}")
    with pytest.raises(Unavailable, match=r"pool 'p' is full: no free address in "
                                          r"10.90.0.10-10.90.0.12 \(3 leased\)"):
        ipam.allocate(small, "default/one-too-many")
    ipam.release("p", "default/c1")
    assert ipam.allocate(small, "default/one-too-many") == A("10.90.0.11")


def test_a_thousand_leases(tmp_path: Path) -> None:
    big = parse_pool("big", {"bridge": "br0", "subnet": "10.91.0.0/22"})
    ipam = Ipam(tmp_path)
    got = {ipam.allocate(big, f"default/c{i}") for i in range(1000)}
    assert len(got) == 1000
