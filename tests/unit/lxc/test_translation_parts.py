"""Pieces of the translation that the golden files do not pin down on their own."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from runtime import errdefs
from runtime.lxc import resources, seccomp, security, setup_hooks


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


def test_seccomp_notify_is_refused_and_kill_process_is_exact() -> None:
    with pytest.raises(errdefs.NotImplementedErr, match="SCMP_ACT_NOTIFY"):
        seccomp.plan({"defaultAction": "SCMP_ACT_NOTIFY"}, [])
    with pytest.raises(errdefs.NotImplementedErr, match="linux.seccomp.listenerPath"):
        seccomp.plan({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}, [])
    notes: list[str] = []
    f = seccomp.plan({"defaultAction": "SCMP_ACT_KILL_PROCESS",
                      "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}, notes)
    assert seccomp.describe(f) == "default kill_process\nflags 0\nread allow\n"
    assert notes == []


def test_seccomp_rules_equal_to_the_default_action_are_dropped_as_runc_does() -> None:
    # libseccomp refuses a rule whose action is the default ("Failed to add rule for syscall
    # personality"), also with argument conditions; runc drops every such rule.
    f = seccomp.plan({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}, [])
    assert [(r.names, r.action) for r in f.rules] == [
        (("read", "write"), seccomp.ACT_ALLOW), (("chmod",), seccomp.ACT_ERRNO | 13)]


def test_seccomp_compiles_skipping_unknown_syscalls_and_splitting_repeated_args() -> None:
    f = seccomp.plan({"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                      "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
                      "syscalls": [
        {"names": ["read", "no_such_syscall_anywhere"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]}, [])
    assert f.flags == 2
    bpf = seccomp.compile_bpf(f)
    assert bpf and len(bpf) % 8 == 0  # struct sock_filter is 8 bytes


@pytest.mark.parametrize(("policy", "message"), [
    ({"defaultAction": "SCMP_ACT_BOGUS"}, "defaultAction: unknown action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["NOPE"]}, "flags\\[0\\]"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 7, "value": 0, "op": "SCMP_CMP_EQ"}]}]}, "args\\[0\\].index"),
])
def test_seccomp_bad_input_names_the_field(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match=message):
        seccomp.plan(policy, [])


def test_process_directives_carry_user_groups_rlimits_caps_and_order_flags() -> None:
    text = security.process_directives({
        "user": {"uid": 1000, "gid": 1001, "additionalGids": [10, 1234]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096}],
        "capabilities": {"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"],
                         "permitted": ["CAP_KILL"], "inheritable": [], "ambient": []},
        "noNewPrivileges": True, "cwd": "/w"}, [], seccomp_flags=0)
    assert text.splitlines() == ["uid 1000", "gid 1001", "groups 10 1234",
                                 "rlimit 7 1024 4096 RLIMIT_NOFILE", "caps 21 20 20 0 0", "nnp",
                                 "cwd /w", "seccomp 0"]
    # No capabilities object: nothing changed (runc too); no groups: an empty list (cleared).
    assert security.process_directives({}, []).splitlines() == ["uid 0", "gid 0", "groups"]
    with pytest.raises(errdefs.InvalidArgument, match="process.rlimits\\[0\\].type"):
        security.process_directives({"rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1,
                                                  "hard": 1}]}, [])


def test_device_hook_quotes_paths_and_skips_lxc_nodes() -> None:
    [(key, value)] = setup_hooks.autodev_hook({"linux": {"devices": [
        {"type": "c", "path": "/dev/my dev", "major": 1, "minor": 2},
        {"type": "c", "path": "/dev/null", "major": 1, "minor": 3},
        {"type": "p", "path": "/dev/fifo"}]}})
    assert key == "lxc.hook.autodev"
    assert value.startswith(setup_hooks.path_helper() + " devices '")
    payload = json.loads(shlex.split(value)[-1])
    assert [d["path"] for d in payload] == ["/dev/my dev", "/dev/fifo"]  # LXC makes /dev/null
