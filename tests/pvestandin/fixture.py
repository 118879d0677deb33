"""pytest fixtures: ``pve_standin`` (with ``local-zfs`` on a fresh pool: OpenZFS where its
kernel module is loaded, as in the pve9 test guest, else zfs-fuse; tests/harness/zfs.py) and
``pve_standin_nozfs`` (``local`` only; no ZFS needed).

Use them from a test module with ``from tests.pvestandin.fixture import pve_standin_fixture
# noqa: F401`` (the fixture's name is ``pve_standin``). Each yields a :class:`StandInHandle`
with the URL, the token and the CA file, and the stand-in's state for white-box checks.
Skips, with the reason, where the stand-in cannot run (not root, no LXC, no schema files).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from tests.harness import leaks
from tests.harness.zfs import TestPool, ZfsFuse, test_pool, zfs_fuse_fixture  # noqa: F401
from tests.pvestandin.schema import schema_dir
from tests.pvestandin.server import TEMPLATE_NAME, Options, StandIn, ThreadedStandIn

T = TypeVar("T")


@dataclass
class StandInHandle:
    standin: StandIn
    threaded: ThreadedStandIn
    pool: TestPool | None

    @property
    def url(self) -> str:
        return self.standin.url

    @property
    def host(self) -> str:
        return self.standin.opts.host

    @property
    def port(self) -> int:
        return self.standin.port

    @property
    def node(self) -> str:
        return self.standin.opts.node

    @property
    def token_id(self) -> str:       # user@realm!name
        return self.standin.opts.token_id

    @property
    def token_secret(self) -> str:
        return self.standin.token_secret

    @property
    def ca_file(self) -> str:
        return str(self.standin.ca_file)

    @property
    def template(self) -> str:
        return f"local:vztmpl/{TEMPLATE_NAME}"

    def leftovers(self) -> list[str]:
        """CTs, locks, volumes, running CTs and running tasks the stand-in still holds."""
        node = self.standin.node
        assert node is not None
        return self.call(node.leftovers())

    def auth_header(self) -> str:
        return f"PVEAPIToken={self.token_id}={self.token_secret}"

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the stand-in's own event loop."""
        return self.threaded.call(coro)


def standin_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the PVE stand-in needs root (LXC, bridges, mounts)"
    for tool in ("lxc-start", "lxc-info", "lxc-stop", "openssl", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if schema_dir() is None:
        return "PVE API schema files not found (set PVE_API_SCHEMA_DIR)"
    return None


@contextlib.contextmanager
def running_standin(opts: Options, pool: TestPool | None = None) -> Iterator[StandInHandle]:
    """A stand-in with any options (e.g. ``lxcpath``, ``task_delay``, ``token_privs``; with
    ``zfs_pool=pool.name`` for ``local-zfs``), stopped and checked for leftovers at the end."""
    threaded = ThreadedStandIn(opts)
    with threaded as standin:
        yield StandInHandle(standin, threaded, pool)
    # The stand-in's own clean-up is part of what the tests check: nothing of it stays.
    folder = str(standin.folder)
    left = [f"process {pid}: {cmd}"
            for pid, cmd in leaks.processes_mentioning([folder]).items()]
    left += [f"mount {m}" for m in leaks.mounts_under([folder])]
    left += [f"folder {folder}"] if os.path.exists(folder) else []
    left += [f"bridge {b}" for b in standin.bridges.values()
             if os.path.exists(f"/sys/class/net/{b}")]
    assert not left, f"the PVE stand-in left: {left}"


@pytest.fixture(name="pve_standin")
def pve_standin_fixture(zfs_fuse: ZfsFuse) -> Iterator[StandInHandle]:  # noqa: F811
    reason = standin_skip_reason()
    if reason:
        pytest.skip(reason)
    with test_pool(prefix="pvs") as pool:
        with running_standin(Options(zfs_pool=pool.name, nextid_range=random_range()),
                             pool) as handle:
            yield handle


@pytest.fixture(name="pve_standin_nozfs")
def pve_standin_nozfs_fixture() -> Iterator[StandInHandle]:
    reason = standin_skip_reason()
    if reason:
        pytest.skip(reason)
    with running_standin(Options(nextid_range=random_range())) as handle:
        yield handle


def random_range() -> tuple[int, int]:
    """A per-run VMID range (datacenter.cfg ``next-id: lower=…,upper=…``) so that two stand-ins
    on one host never name the same veth (veth<vmid>i<n>) or cgroup (lxc/<vmid>)."""
    import random
    lower = random.randrange(100000, 900000, 1000)
    return lower, lower + 1000
