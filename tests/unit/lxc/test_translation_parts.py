"""Pieces of the translation that the golden files do not pin down on their own."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from runtime import errdefs
from runtime.lxc import resources, seccomp, setup_hooks


@pytest.mark.parametrize(("key", "ns"), [
    ("net.ipv4.ip_forward", "net"), ("net/ipv4/ip_forward", "net"), ("kernel.shmmax", "ipc"),
    ("fs.mqueue.msg_max", "ipc"), ("kernel.domainname", "uts"), ("kernel.panic", None),
    ("vm.overcommit_memory", None),
])
def test_sysctl_namespaces(key: str, ns: str | None) -> None:
    assert setup_hooks.sysctl_namespace(key) == ns


def test_detect_hybrid_and_unified(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory/memory.memsw.limit_in_bytes").write_text("0")
    (tmp_path / "blkio").mkdir()
    (tmp_path / "blkio/blkio.bfq.weight").write_text("100")
    assert resources.detect(tmp_path) == resources.CgroupHost("v1", True, "blkio.bfq.weight")
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids")
    assert resources.detect(tmp_path).version == "v2"


def _resources(r: dict[str, Any], host: resources.CgroupHost) -> tuple[dict[str, str],
                                                                         list[str]]:
    notes: list[str] = []
    lines = resources.configure_resources({"linux": {"resources": r}}, host, notes)
    return dict(lines), notes


def test_unified_is_refused_on_v1_and_passed_on_v2() -> None:
    with pytest.raises(errdefs.NotImplementedErr, match="linux.resources.unified"):
        _resources({"unified": {"memory.high": "1G"}}, resources.CgroupHost("v1"))
    keys, _ = _resources({"unified": {"memory.high": "1G"}}, resources.CgroupHost("v2"))
    assert keys == {"lxc.cgroup2.memory.high": "1G"}


def test_v2_swap_without_limit_and_unlimited_values() -> None:
    keys, notes = _resources({"memory": {"swap": 100}}, resources.CgroupHost("v2"))
    assert keys == {} and notes[0].startswith("linux.resources.memory.swap")
    keys, _ = _resources({"memory": {"limit": -1, "swap": -1}, "pids": {"limit": 0},
                          "cpu": {"quota": -1}}, resources.CgroupHost("v2"))
    assert keys == {"lxc.cgroup2.memory.max": "max", "lxc.cgroup2.memory.swap.max": "max",
                    "lxc.cgroup2.pids.max": "max", "lxc.cgroup2.cpu.max": "max 100000"}


def test_seccomp_notify_is_refused_and_kill_process_downgraded() -> None:
    with pytest.raises(errdefs.NotImplementedErr, match="SCMP_ACT_NOTIFY"):
        seccomp.render({"defaultAction": "SCMP_ACT_NOTIFY"}, [])
    with pytest.raises(errdefs.NotImplementedErr, match="linux.seccomp.listenerPath"):
        seccomp.render({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}, [])
    notes: list[str] = []
    text = seccomp.render({"defaultAction": "SCMP_ACT_KILL_PROCESS",
                           "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]},
                          notes)
    assert text == "2\nallowlist kill\n[all]\nread allow\n"
    assert notes == ["linux.seccomp.defaultAction: SCMP_ACT_KILL_PROCESS downgraded to kill "
                     "(thread)"]


def test_device_hook_quotes_paths_and_skips_lxc_nodes() -> None:
    [(key, value)] = setup_hooks.autodev_hook({"linux": {"devices": [
        {"type": "c", "path": "/dev/my dev", "major": 1, "minor": 2},
        {"type": "c", "path": "/dev/null", "major": 1, "minor": 3},
        {"type": "p", "path": "/dev/fifo"}]}})
    assert key == "lxc.hook.autodev"
    assert value.startswith(setup_hooks.path_helper() + " devices '")
    payload = json.loads(shlex.split(value)[-1])
    assert [d["path"] for d in payload] == ["/dev/my dev", "/dev/fifo"]  # LXC makes /dev/null
