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
from runtime.lxc import config, seccomp
from runtime.lxc.mountpoints import Plan, Target
from runtime.lxc.resources import CgroupHost
from tests.unit.lxc.specs import CASES, CTR_DEFAULT, CTR_SECCOMP, EVERYTHING, MINIMAL, POD_MEMBER

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "lxc"
GOLDEN_SECCOMP = Path(__file__).resolve().parents[2] / "golden" / "seccomp"
#: This host's layout (hybrid: v1 controllers, swap accounting, no block-I/O weight file).
HYBRID = CgroupHost(version="v1", memsw=True, io_weight="")
#: A Proxmox VE 8/9 node (pure cgroup v2).
UNIFIED = CgroupHost(version="v2", io_weight="io.weight")
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def params(**overrides: Any) -> config.Params:
    base: dict[str, Any] = dict(
        name="default-c1", rootfs="/run/b/c1/rootfs",
        gate="/bin/sh /usr/lib/lxcri/gate.sh /run/s/c1", log_file="/run/s/c1/lxc.log",
        default_hostname="c1", shim_pid=4242,
        source_is_dir=lambda path: not path.endswith("hosts"), cgroup=HYBRID,
        path_helper="python3 -I -S /usr/lib/lxcri/rootpath.py")
    base.update(overrides)
    return config.Params(**base)


def _golden(path: Path, text: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1"
    assert text == path.read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    notes: list[str] = []
    text = config.render(config.lxc_config(copy.deepcopy(CASES[case]), params(), notes))
    # The downgrades are part of the contract: they are what the operator is warned about.
    text += "".join(f"# downgraded: {n}\n" for n in notes)
    _golden(GOLDEN / f"{case}.conf", text)


@pytest.mark.parametrize("case", ["everything", "ctr-default"])
def test_golden_cgroup_v2(case: str) -> None:
    notes: list[str] = []
    lines = config.lxc_config(copy.deepcopy(CASES[case]), params(cgroup=UNIFIED), notes)
    text = config.render([ln for ln in lines if ln[0].startswith("lxc.cgroup")])
    text += "".join(f"# downgraded: {n}\n" for n in notes if "resources" in n)
    _golden(GOLDEN / f"{case}.cgroup2.conf", text)


@pytest.mark.parametrize("case", ["ctr-seccomp", "everything"])
def test_golden_seccomp(case: str) -> None:
    notes: list[str] = []
    policy = config.seccomp_policy(copy.deepcopy(CASES[case]), notes)
    assert policy is not None
    text = seccomp.describe(policy)
    _golden(GOLDEN_SECCOMP / f"{case}.seccomp", text + "".join(f"# {n}\n" for n in notes))


def keys(spec: dict[str, Any], p: config.Params | None = None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in config.lxc_config(spec, p or params()):
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
    entries = [e for e in keys(copy.deepcopy(POD_MEMBER))["lxc.mount.entry"]
               if not e.split()[1].startswith(("proc/", "sys/"))  # masked/read-only paths
               and e.split()[1] not in ("dev", "sys")]  # the spec's flags for LXC's mounts
    targets = [e.split()[1] for e in entries]
    assert targets == ["dev/shm", "dev/mqueue", "run", "etc/hosts", "var/www/my\\040data"]
    assert entries[3] == "/var/lib/pod/hosts etc/hosts none rbind,rprivate,ro,create=file 0 0"
    assert entries[4] == "/srv/volumes/v\\0401 var/www/my\\040data none rbind,rw,create=dir 0 0"


def test_downgrades_are_reported_not_dropped_silently() -> None:
    notes = config.downgrades(copy.deepcopy(CTR_DEFAULT), params())
    assert not any(n.startswith("linux.cgroupsPath") for n in notes)  # honoured now
    assert any(n.startswith("process.apparmorProfile: 'generated' not enforced") for n in notes)
    with_apparmor = config.downgrades(copy.deepcopy(CTR_DEFAULT), params(apparmor=True))
    assert not any(n.startswith("process.apparmorProfile") for n in with_apparmor)


def test_process_settings_are_the_inits_not_lxcs() -> None:
    # Capabilities, user, groups, rlimits, no_new_privs, seccomp: the in-container init
    # applies them (runtime.lxc.security.process_directives); LXC would confine itself.
    k = keys(copy.deepcopy(EVERYTHING))
    for key in ("lxc.cap.keep", "lxc.cap.drop", "lxc.init.uid", "lxc.init.gid",
                "lxc.init.groups", "lxc.no_new_privs", "lxc.seccomp.profile"):
        assert key not in k, key
    assert not [key for key in k if key.startswith("lxc.prlimit")]


def test_all_five_capability_sets_are_the_inits_without_a_downgrade() -> None:
    notes = config.downgrades(copy.deepcopy(EVERYTHING), params())
    assert not [n for n in notes if n.startswith("process.capabilities")]


def test_readonly_root_and_paths_go_to_the_mount_hook() -> None:
    lines = keys(copy.deepcopy(EVERYTHING))
    hook = lines["lxc.hook.mount"][0]
    assert 'mount -o remount,bind,ro "$r"' in hook
    # With sysctls, read-only paths wait in the hook until the sysctls are written …
    assert "p /proc/sys" in hook
    assert hook.index("ip_forward") < hook.index("p /proc/sys")  # sysctls before ro /proc/sys
    # … while masked paths are always plain mount entries (tmpfs for a directory, /dev/null
    # for a file; the kernel refuses the other and `optional` skips it).
    assert "tmpfs proc/kcore tmpfs ro,nosuid,nodev,noexec,size=0,optional 0 0" in \
        lines["lxc.mount.entry"]
    assert "/dev/null proc/kcore none bind,optional 0 0" in lines["lxc.mount.entry"]


def test_cgroup_files_are_read_only_unless_the_spec_mounts_them_writable() -> None:
    def auto(mounts: list[dict[str, Any]]) -> str:
        spec = copy.deepcopy(MINIMAL)
        spec["mounts"] = mounts
        return keys(spec)["lxc.mount.auto"][0]

    cgroup = {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}
    assert auto([]) == "proc:rw sys:ro cgroup:ro:force"  # containerd's default spec
    assert auto([{**cgroup, "options": ["nosuid", "ro"]}]) == "proc:rw sys:ro cgroup:ro:force"
    assert auto([{**cgroup, "options": ["rw"]}]) == "proc:rw sys:ro cgroup:mixed:force"
    assert auto([{**cgroup, "options": ["ro", "rw"]}]) == "proc:rw sys:ro cgroup:mixed:force"


def test_the_specs_flags_for_sys_and_dev_are_remounts_in_the_mount_hook() -> None:
    k = keys(copy.deepcopy(CTR_DEFAULT))
    hook = k["lxc.hook.mount"][0]
    assert 'mount -o remount,bind,ro,nosuid,nodev,noexec "$r/sys"' in hook
    assert 'mount -o remount,bind,rw,nosuid,strictatime "$r/dev"' in hook
    # /proc: LXC's proc:rw already has the nosuid,nodev,noexec containerd asks.
    assert '"$r/proc"' not in hook
    assert not any(e.split()[1] in ("sys", "dev", "proc") for e in k["lxc.mount.entry"])
    spec = copy.deepcopy(MINIMAL)
    spec["mounts"] = [{"destination": "/sys", "type": "sysfs", "source": "sysfs",
                       "options": ["ro"]}]
    assert "lxc.hook.mount" not in keys(spec)  # LXC's sys:ro is what it asks


def test_a_mount_plan_names_the_resolved_target_without_create() -> None:
    spec = copy.deepcopy(POD_MEMBER)
    index = next(i for i, m in enumerate(spec["mounts"]) if m["destination"] == "/etc/hosts")
    shm = next(i for i, m in enumerate(spec["mounts"]) if m["destination"] == "/dev/shm")
    plan = Plan(mounts={index: Target("/usr/etc/hosts"), shm: Target("/dev/shm", "dir")},
                paths={"/proc/kcore": "/proc/kcore"})
    entries = keys(spec, params(mount_plan=plan))["lxc.mount.entry"]
    assert "/var/lib/pod/hosts usr/etc/hosts none rbind,rprivate,ro 0 0" in entries
    assert any(e.startswith("shm dev/shm tmpfs ") and e.endswith(",create=dir 0 0")
               for e in entries)


@pytest.mark.parametrize("option", ["create=dir", "create=file", "optional", "relative",
                                    "idmap=container"])
def test_lxc_only_mount_options_are_refused(option: str) -> None:
    spec = copy.deepcopy(MINIMAL)
    spec["mounts"] = [{"destination": "/data", "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", option]}]
    with pytest.raises(errdefs.InvalidArgument,
                       match=rf"mounts\[0\]\.options\[1\]: '{option}' is an LXC setting"):
        config.lxc_config(spec, params())


def test_readonly_paths_are_mount_entries_without_sysctls() -> None:
    lines = keys(copy.deepcopy(CTR_DEFAULT))
    # No process per path on the common path (the hook only remounts /sys and /dev).
    assert "p /proc" not in lines["lxc.hook.mount"][0]
    assert ("/usr/lib/x86_64-linux-gnu/lxc/rootfs/proc/sys proc/sys none bind,ro,optional 0 0"
            in lines["lxc.mount.entry"])


def test_v1_and_v2_resources() -> None:
    v1 = keys(copy.deepcopy(EVERYTHING))
    assert v1["lxc.cgroup.memory.limit_in_bytes"] == ["67108864"]
    assert v1["lxc.cgroup.pids.max"] == ["64"]
    assert v1["lxc.cgroup.devices.deny"] == ["a"]
    v2 = {k: v for k, v in config.lxc_config(copy.deepcopy(EVERYTHING), params(cgroup=UNIFIED))}
    assert v2["lxc.cgroup2.memory.max"] == "67108864"
    assert v2["lxc.cgroup2.memory.swap.max"] == str(134217728 - 67108864)
    assert v2["lxc.cgroup2.cpu.max"] == "50000 100000"
    assert v2["lxc.cgroup2.cpu.weight"] == str(1 + (510 * 9999) // 262142)


def test_seccomp_policy_keeps_errno_and_arguments() -> None:
    policy = config.seccomp_policy(copy.deepcopy(EVERYTHING))
    assert policy is not None
    lines = seccomp.describe(policy).splitlines()
    assert lines[0] == "default allow"
    assert "mkdir,mkdirat errno 13" in lines
    assert "clone errno 1 [0 MASKED_EQ 2114060288 0]" in lines
    ctr = config.seccomp_policy(copy.deepcopy(CTR_SECCOMP))
    assert ctr is not None and seccomp.describe(ctr).startswith("default errno 1\n")


@pytest.mark.parametrize(("sysctl", "message"), [
    ({"kernel.panic": "1"}, "linux.sysctl.kernel.panic: not a namespaced sysctl"),
    ({"vm.swappiness": "1"}, "linux.sysctl.vm.swappiness: not a namespaced sysctl"),
])
def test_host_wide_sysctls_are_refused(sysctl: dict[str, str], message: str) -> None:
    spec = copy.deepcopy(MINIMAL)
    spec["linux"]["sysctl"] = sysctl
    with pytest.raises(errdefs.InvalidArgument, match=message):
        config.lxc_config(spec, params())


def test_net_sysctl_with_the_hosts_netns_is_refused() -> None:
    spec = config_spec_without_net_ipc_uts()
    spec["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    with pytest.raises(errdefs.InvalidArgument, match="shares the host's net namespace"):
        config.lxc_config(spec, params())


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
    ("linux.namespaces", [{"type": "pid"}], errdefs.NotImplementedErr,
     "a new mount namespace is required"),
    ("linux.namespaces", [{"type": "pid"}, {"type": "mount", "path": "/proc/1/ns/mnt"}],
     errdefs.NotImplementedErr, "joining a mount namespace"),
    ("linux.namespaces", [{"type": "pid"}, {"type": "mount"}, {"type": "user"}],
     errdefs.InvalidArgument, "linux.uidMappings: a user namespace needs"),
    ("linux.namespaces", [{"type": "pid"}, {"type": "mount"}, {"type": "time"}],
     errdefs.NotImplementedErr, "time namespaces"),
])
def test_validation_names_the_field(path: str, value: Any, error: type[Exception],
                                    field: str) -> None:
    with pytest.raises(error, match=field.replace("[", r"\[").replace("]", r"\]")
                       .replace(".", r"\.")):
        config.lxc_config(_with(path, value), params())


def test_pid_namespace_joined_by_path_or_the_runtimes_own() -> None:
    spec = copy.deepcopy(MINIMAL)
    spec["linux"]["namespaces"] = [{"type": "pid", "path": "/proc/77/ns/pid"},
                                   {"type": "mount"}]
    assert keys(spec)["lxc.namespace.share.pid"] == ["/proc/77/ns/pid"]
    spec["linux"]["namespaces"] = [{"type": "mount"}]  # hostPID
    assert keys(spec)["lxc.namespace.share.pid"] == ["/proc/4242/ns/pid"]


def test_hostname_without_a_new_uts_namespace_is_refused() -> None:
    spec = _with("linux.namespaces", [{"type": "pid"}, {"type": "mount"}])
    spec["hostname"] = "x"
    with pytest.raises(errdefs.InvalidArgument, match="hostname: requires a new uts namespace"):
        config.lxc_config(spec, params())


def test_render_refuses_a_newline_in_a_value() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="lxc.rootfs.path"):
        config.render([("lxc.rootfs.path", "dir:/a\nlxc.hook.start-host = /evil")])


@pytest.mark.parametrize("path, own, expected", [
    ("/kubepods/burstable/pod1/c1", "/", "kubepods/burstable/pod1/c1"),
    ("kubepods-burstable-pod1.slice:cri-containerd:c1", "/",
     "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/"
     "cri-containerd-c1.scope"),
    ("relative/c1", "/system.slice/containerd.service",
     "system.slice/containerd.service/relative/c1"),
])
def test_cgroups_path_is_the_container_cgroup(path: str, own: str, expected: str) -> None:
    spec = copy.deepcopy(MINIMAL)
    spec["linux"]["cgroupsPath"] = path
    k = {key: v for key, v in config.lxc_config(spec, params(own_cgroup=own))}
    assert k["lxc.cgroup.dir.container"] == expected
    assert k["lxc.cgroup.dir.monitor"] == "lxc.monitor.default-c1"


def test_no_cgroups_path_keeps_lxcs_own_names() -> None:
    assert not any(key.startswith("lxc.cgroup.dir") for key in keys(copy.deepcopy(MINIMAL)))
