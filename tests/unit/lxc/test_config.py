"""The OCI → LXC translation: golden files per spec, and validation errors naming the field.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/unit/lxc`` and review the diff;
never edit them by hand.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from runtime import errdefs
from runtime.lxc import config
from tests.unit.lxc.specs import CASES, CTR_DEFAULT, MINIMAL, POD_MEMBER

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "lxc"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def params(**overrides: Any) -> config.Params:
    base: dict[str, Any] = dict(
        name="default-c1", rootfs="/run/b/c1/rootfs",
        gate="/bin/sh /usr/lib/lxcri/gate.sh /run/s/c1", log_file="/run/s/c1/lxc.log",
        default_hostname="c1", shim_pid=4242,
        source_is_dir=lambda path: not path.endswith("hosts"))
    base.update(overrides)
    return config.Params(**base)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    text = config.render(config.lxc_config(copy.deepcopy(CASES[case]), params()))
    path = GOLDEN / f"{case}.conf"
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1"
    assert text == path.read_text()


def keys(spec: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in config.lxc_config(spec, params()):
        out.setdefault(key, []).append(value)
    return out


def test_args_are_not_in_the_config() -> None:
    # lxc.init.cmd does not honour quoting: argv goes on lxc-execute's command line.
    assert "lxc.init.cmd" not in keys(copy.deepcopy(POD_MEMBER))


def test_netns_path_is_joined_and_no_network_is_made() -> None:
    k = keys(copy.deepcopy(POD_MEMBER))
    assert k["lxc.namespace.share.net"] == ["/var/run/netns/cni-1234-abcd"]
    assert "lxc.net.0.type" not in k
    assert "lxc.uts.name" not in k  # the pod's UTS namespace is joined, never renamed


def test_new_netns_is_empty() -> None:
    k = keys(copy.deepcopy(CTR_DEFAULT))
    assert k["lxc.net.0.type"] == ["empty"]
    assert not any(key.startswith("lxc.namespace.") for key in k)
    assert k["lxc.uts.name"] == ["web-1"]


def test_absent_namespaces_join_the_shims_own() -> None:
    k = keys(config_spec_without_net_ipc_uts())
    assert k["lxc.namespace.share.net"] == ["/proc/4242/ns/net"]
    assert k["lxc.namespace.share.uts"] == ["/proc/4242/ns/uts"]
    assert "lxc.net.0.type" not in k and "lxc.uts.name" not in k


def config_spec_without_net_ipc_uts() -> dict[str, Any]:
    spec = copy.deepcopy(MINIMAL)
    spec["linux"]["namespaces"] = [{"type": "pid"}, {"type": "mount"}]
    return spec


def test_hostname_defaults_to_the_container_id() -> None:
    assert keys(copy.deepcopy(MINIMAL))["lxc.uts.name"] == ["c1"]


def test_mounts_provided_by_lxc_are_skipped_and_binds_get_create() -> None:
    entries = keys(copy.deepcopy(POD_MEMBER))["lxc.mount.entry"]
    targets = [e.split()[1] for e in entries]
    assert targets == ["dev/shm", "dev/mqueue", "run", "etc/hosts", "var/www/my\\040data"]
    assert entries[3] == "/var/lib/pod/hosts etc/hosts none rbind,rprivate,ro,create=file 0 0"
    assert entries[4] == "/srv/volumes/v\\0401 var/www/my\\040data none rbind,rw,create=dir 0 0"


def test_unsupported_fields_are_reported_not_dropped_silently() -> None:
    assert config.unsupported_fields(CTR_DEFAULT) == [
        "process.capabilities", "process.rlimits", "process.noNewPrivileges",
        "linux.maskedPaths", "linux.readonlyPaths", "linux.resources", "linux.cgroupsPath"]
    assert config.unsupported_fields(MINIMAL) == []


def _with(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(MINIMAL)
    node = spec
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return spec


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "error", "field"), [
    ("process", _DELETE, errdefs.InvalidArgument, "process: must be an object"),
    ("process.args", [], errdefs.InvalidArgument, "process.args: must be a non-empty list"),
    ("process.args", "sh", errdefs.InvalidArgument, "process.args: must be a non-empty list"),
    ("process.args", [""], errdefs.InvalidArgument, "process.args[0]"),
    ("process.env", ["NOEQUALS"], errdefs.InvalidArgument, "process.env[0]"),
    ("process.env", ["A=1\nB=2"], errdefs.InvalidArgument, "process.env[0]"),
    ("process.cwd", "relative", errdefs.InvalidArgument, "process.cwd"),
    ("process.user", {"uid": -1}, errdefs.InvalidArgument, "process.user.uid"),
    ("process.user", {"gid": "0"}, errdefs.InvalidArgument, "process.user.gid"),
    ("process.user", {"additionalGids": [1, "x"]}, errdefs.InvalidArgument,
     "process.user.additionalGids"),
    ("process.terminal", True, errdefs.NotImplementedErr, "process.terminal"),
    ("root", {"path": "rootfs", "readonly": True}, errdefs.NotImplementedErr, "root.readonly"),
    ("mounts", [{"destination": "rel"}], errdefs.InvalidArgument, "mounts[0].destination"),
    ("mounts", [{"destination": "/a/../b"}], errdefs.InvalidArgument, "mounts[0].destination"),
    ("mounts", [{"destination": "/a", "options": "ro"}], errdefs.InvalidArgument,
     "mounts[0].options"),
    ("hostname", "a\nb", errdefs.InvalidArgument, "hostname"),
    ("linux.namespaces", [{"type": "pid"}, {"type": "pid"}, {"type": "mount"}],
     errdefs.InvalidArgument, "linux.namespaces[1].type: duplicate"),
    ("linux.namespaces", [{"type": "bogus"}], errdefs.InvalidArgument,
     "linux.namespaces[0].type"),
    ("linux.namespaces", [{"type": "pid"}, {"type": "mount"},
                          {"type": "network", "path": "netns"}],
     errdefs.InvalidArgument, "linux.namespaces[2].path"),
    ("linux.namespaces", [{"type": "mount"}], errdefs.NotImplementedErr,
     "a new pid namespace is required"),
    ("linux.namespaces", [{"type": "pid", "path": "/proc/1/ns/pid"}, {"type": "mount"}],
     errdefs.NotImplementedErr, "joining a pid namespace"),
    ("linux.namespaces", [{"type": "pid"}, {"type": "mount"}, {"type": "user"}],
     errdefs.NotImplementedErr, "user namespaces"),
])
def test_validation_names_the_field(path: str, value: Any, error: type[Exception],
                                    field: str) -> None:
    with pytest.raises(error, match=field.replace("[", r"\[").replace("]", r"\]")
                       .replace(".", r"\.")):
        config.lxc_config(_with(path, value), params())


def test_hostname_without_a_new_uts_namespace_is_refused() -> None:
    spec = _with("linux.namespaces", [{"type": "pid"}, {"type": "mount"}])
    spec["hostname"] = "x"
    with pytest.raises(errdefs.InvalidArgument, match="hostname: requires a new uts namespace"):
        config.lxc_config(spec, params())


def test_render_refuses_a_newline_in_a_value() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="lxc.rootfs.path"):
        config.render([("lxc.rootfs.path", "dir:/a\nlxc.hook.start-host = /evil")])
