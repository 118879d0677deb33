"""The bundle validator: every mistake names its field path and the problem."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from runtime import errdefs, oci
from tests.unit.lxc.specs import CTR_DEFAULT, CTR_SECCOMP, EVERYTHING, MINIMAL, POD_MEMBER

_DELETE = object()


def mutate(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with the dotted ``path`` set (list indexes as numbers)."""
    spec = copy.deepcopy(base)
    node: Any = spec
    *parents, last = path.split(".")
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    if value is _DELETE:
        node.pop(last, None)
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return spec


#: (mutation of the ctr-default spec, expected message prefix). At least 20 kinds of mistake.
INVALID = [
    ("ociVersion", _DELETE, "ociVersion: must be a SemVer"),
    ("ociVersion", "2.0.0", "ociVersion: 2.0.0 is not supported"),
    ("root", _DELETE, "root: is required"),
    ("root.path", "", "root.path: must not be empty"),
    ("root.readonly", "yes", "root.readonly: must be a boolean"),
    ("process", _DELETE, "process: is required"),
    ("process.args", [], "process.args: must be a non-empty list"),
    ("process.args", "echo hi", "process.args: must be a non-empty list"),
    ("process.args", ["echo", 3], "process.args[1]: must be a string"),
    ("process.args", [""], "process.args[0]: must not be empty"),
    ("process.cwd", "tmp", "process.cwd: must be an absolute path"),
    ("process.cwd", _DELETE, "process.cwd: is required"),
    ("process.env", ["PATH"], "process.env[0]: must be a KEY=VALUE string"),
    ("process.env", ["=x"], "process.env[0]: must be KEY=VALUE with a non-empty KEY"),
    ("process.terminal", 1, "process.terminal: must be a boolean"),
    ("process.user", _DELETE, "process.user: is required"),
    ("process.user.uid", -1, "process.user.uid: must be between 0 and 4294967295"),
    ("process.user.gid", "0", "process.user.gid: must be an integer"),
    ("process.user.umask", 0o1777, "process.user.umask: must be between 0 and 511"),
    ("process.user.additionalGids", [1, True], "process.user.additionalGids[1]"),
    ("process.capabilities.bounding", ["CAP_FLY"],
     "process.capabilities.bounding[0]: unknown capability 'CAP_FLY'"),
    ("process.capabilities.extra", [], "process.capabilities.extra: unknown set"),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": 2, "hard": 1}],
     "process.rlimits[0].soft: must not exceed hard"),
    ("process.rlimits", [{"type": "RLIMIT_FOO", "soft": 1, "hard": 1}],
     "process.rlimits[0].type: unknown resource"),
    ("process.rlimits", [{"type": "RLIMIT_CORE", "soft": 1, "hard": 1},
                         {"type": "RLIMIT_CORE", "soft": 1, "hard": 1}],
     "process.rlimits[1].type: duplicate rlimit RLIMIT_CORE"),
    ("process.oomScoreAdj", 1001, "process.oomScoreAdj: must be between -1000 and 1000"),
    ("process.noNewPrivileges", "true", "process.noNewPrivileges: must be a boolean"),
    ("process.commandLine", "echo hi", "process.commandLine: is Windows-only"),
    ("hostname", 7, "hostname: must be a string"),
    ("mounts.0.destination", "proc", "mounts[0].destination: must be an absolute path"),
    ("mounts.0.options", "ro", "mounts[0].options: must be a list"),
    ("mounts", {}, "mounts: must be a list"),
    ("hooks", {"prestop": []}, "hooks.prestop: unknown hook kind"),
    ("hooks", {"poststart": [{"path": "hook"}]}, "hooks.poststart[0].path: must be an absolute"),
    ("hooks", {"poststart": [{"path": "/h", "timeout": 0}]},
     "hooks.poststart[0].timeout: must be between 1"),
    ("annotations", {"a": 1}, "annotations.a: must be a string"),
    ("linux.namespaces", [{"type": "pid"}, {"type": "pid"}],
     "linux.namespaces[1].type: duplicate namespace 'pid'"),
    ("linux.namespaces", [{"type": "vm"}], "linux.namespaces[0].type: must be one of"),
    ("linux.namespaces", [{"type": "network", "path": "ns/x"}],
     "linux.namespaces[0].path: must be an absolute path"),
    ("linux.uidMappings", [{"containerID": 0, "hostID": 1000, "size": 0}],
     "linux.uidMappings[0].size: must be between 1"),
    ("linux.devices", [{"type": "x", "path": "/dev/x"}], "linux.devices[0].type"),
    ("linux.devices", [{"type": "c", "path": "/dev/x", "minor": 1}],
     "linux.devices[0].major: is required"),
    ("linux.resources.memory.limit", "1G", "linux.resources.memory.limit: must be an integer"),
    ("linux.resources.memory", {"limit": 100, "swap": 50},
     "linux.resources.memory.swap: must be at least memory.limit"),
    ("linux.resources.cpu.shares", 1, "linux.resources.cpu.shares: must be between 2"),
    ("linux.resources.cpu.cpus", "0-a", "linux.resources.cpu.cpus: must be a list"),
    ("linux.resources.pids", {}, "linux.resources.pids.limit: is required"),
    ("linux.resources.blockIO.weight", 5, "linux.resources.blockIO.weight: must be between 10"),
    ("linux.resources.devices", [{"access": "rwm"}],
     "linux.resources.devices[0].allow: is required"),
    ("linux.sysctl", {"net.ipv4.ip_forward": 1}, "linux.sysctl.net.ipv4.ip_forward: must be a"),
    ("linux.sysctl", {"../etc": "1"}, "linux.sysctl.../etc: is not a sysctl name"),
    ("linux.seccomp", {"defaultAction": "SCMP_ACT_MAYBE"}, "linux.seccomp.defaultAction"),
    ("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]},
     "linux.seccomp.syscalls[0].names: must be a non-empty list"),
    ("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                     "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]},
     "linux.seccomp.syscalls[0].args[0].index: must be between 0 and 5"),
    ("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]},
     "linux.seccomp.architectures[0]: unknown architecture"),
    ("linux.rootfsPropagation", "sideways", "linux.rootfsPropagation: must be one of"),
    ("linux.maskedPaths", ["proc/kcore"], "linux.maskedPaths[0]: must be an absolute path"),
    ("linux.readonlyPaths", ["/proc/../etc"], "linux.readonlyPaths[0]: must not contain '..'"),
    # Issue 12: a line break LXC reads (\r too) would add a config line of the spec's choosing.
    ("process.env", ["X=1\rlxc.hook.pre-start = /bin/touch /tmp/lxcri-m"],
     "process.env[0]: must not contain a line break"),
    ("hostname", "h\rlxc.hook.pre-start = /bin/true", "hostname: must not contain a line break"),
    ("mounts", [{"destination": "/d", "type": "tmpfs", "source": "t",
                 "options": ["ro\rlxc.hook.pre-start = /bin/true"]}],
     "mounts[0].options[0]: must not contain a line break"),
    ("linux.resources", {"unified": {"memory.max\nlxc.hook.pre-start": "1"}},
     'linux.resources.unified["memory.max\\nlxc.hook.pre-start"]: must name a cgroup v2'),
]


@pytest.mark.parametrize(("path", "value", "message"), INVALID,
                         ids=[f"{p}={v!r}"[:60] for p, v, _ in INVALID])
def test_invalid_bundle_names_the_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument) as info:
        oci.check_spec(mutate(CTR_DEFAULT, path, value))
    assert str(info.value).startswith(message), str(info.value)
    assert str(info.value).endswith(": invalid argument")


def test_at_least_twenty_kinds() -> None:
    assert len({m.split(":")[0] for _, _, m in INVALID}) >= 20


@pytest.mark.parametrize("spec", [MINIMAL, CTR_DEFAULT, POD_MEMBER, CTR_SECCOMP, EVERYTHING])
def test_valid_specs_pass(spec: dict[str, Any]) -> None:
    oci.check_spec(copy.deepcopy(spec))


def test_not_an_object() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="config.json: must be a JSON object"):
        oci.check_spec([])


def test_load_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(errdefs.NotFound, match="bundle has no config.json"):
        oci.load_spec(tmp_path)
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(errdefs.InvalidArgument, match="config.json: not valid JSON"):
        oci.load_spec(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(MINIMAL))
    assert oci.load_spec(tmp_path)["process"]["args"] == ["/bin/sh"]
