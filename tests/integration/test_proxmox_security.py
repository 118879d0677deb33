"""The spec's own security settings inside a Proxmox backend CT, through containerd against
the Proxmox stand-in: rlimits, no_new_privs, seccomp, masked and read-only paths, applied by
the LXC backend's own init (lxcri-init.c) which the CT's PID 1 runs before the program
(runtime/proxmox/initdir.py). The LXC backend's counterparts:
tests/integration/test_oci_containerd.py ``test_ctr_run_seccomp_caps_and_masked_paths`` and
tests/integration/test_oci_conformance.py (rlimits, seccomp errno, masked/read-only paths).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.fixtures import PROXMOX_RUNTIME
from tests.harness.zfs import zfs_fuse_fixture  # noqa: F401
from tests.integration.test_proxmox_backend import Pve, env  # noqa: F401
from tests.pvestandin.fixture import pve_standin_fixture  # noqa: F401

pytestmark = pytest.mark.integration


def field(out: str, name: str) -> str:
    return next(ln.split(":", 1)[1].strip() for ln in out.splitlines()
                if ln.startswith(name + ":"))


def test_rlimit_seccomp_nnp_masked_and_read_only_paths(env: Pve, unique_id: str,  # noqa: F811
                                                       tmp_path: Path) -> None:
    profile = tmp_path / "seccomp.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 36}]}))  # ENAMETOOLONG: unmistakable
    script = ("mkdir /tmp/denied; echo rc=$?; grep -E '^(Seccomp|NoNewPrivs):' "
              "/proc/self/status; echo nofile $(ulimit -n) $(ulimit -Hn); "
              "echo timer_list $(wc -c < /proc/timer_list); "
              "grep ' /proc/irq ' /proc/self/mountinfo")
    r = env.ctd.ctr("run", "--rm", "--runtime", PROXMOX_RUNTIME, "--runtime-config-path",
                    str(env.config), "--seccomp", "--seccomp-profile", str(profile),
                    env.image, unique_id, "sh", "-c", script, check=False, timeout=120)
    out = r.stdout
    assert "File name too long" in r.stderr and "rc=1" in out, (out, r.stderr)
    assert field(out, "Seccomp") == "2" and field(out, "NoNewPrivs") == "1", out
    # containerd's default spec: RLIMIT_NOFILE 1024/1024 (the CT's lxc-start has 20000 here).
    assert "nofile 1024 1024" in out, out
    assert "timer_list 0" in out, "ctr's default maskedPaths: /proc/timer_list"
    irq = next(ln for ln in out.splitlines() if " /proc/irq " in ln)
    # ctr's readonlyPaths: /proc/irq, which Proxmox's proc:mixed leaves writable.
    assert "ro" in irq.split()[5].split(","), irq
    assert env.cts() == {}
    assert env.leftovers() == []


def test_an_exec_gets_its_own_user_and_the_cts_seccomp_filter(env: Pve,  # noqa: F811
                                                              unique_id: str,
                                                              tmp_path: Path) -> None:
    profile = tmp_path / "seccomp.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 36}]}))
    env.ctd.ctr("run", "-d", "--runtime", PROXMOX_RUNTIME, "--runtime-config-path",
                str(env.config), "--seccomp", "--seccomp-profile", str(profile), env.image,
                unique_id, "sleep", "300", timeout=120)
    env.wait_status(unique_id, "RUNNING")
    r = env.ctd.ctr("task", "exec", "--exec-id", "x1", "--user", "1000:1000", unique_id,
                    "sh", "-c", "id -u; id -g; mkdir /tmp/x; echo rc=$?", check=False)
    assert r.stdout.split()[:2] == ["1000", "1000"], (r.stdout, r.stderr)
    assert "rc=1" in r.stdout and "File name too long" in r.stderr, (r.stdout, r.stderr)
    env.ctd.ctr("task", "kill", "-s", "SIGKILL", unique_id)
    env.wait_status(unique_id, "STOPPED")
    env.ctd.ctr("task", "rm", unique_id)
    env.ctd.ctr("container", "rm", unique_id)
    assert env.leftovers() == []


def unprivileged_spec(env: Pve, tmp_path: Path, terminal: bool,  # noqa: F811
                      args: list[str]) -> Path:
    """A bundle spec for ``ctr run --config``: a busybox rootfs, a user namespace and PVE's own
    mapping (0:100000:65536), ``args`` as the program."""
    import os

    from tests.harness.rootfs import populate_busybox_rootfs

    # The harness's folder is mkdtemp's 0700; a node's state root is 0711 (runtime/store.py),
    # which the CT's mapped root must pass through to reach the init directory.
    os.chmod(env.ctd.folder, 0o711)
    root = tmp_path / "rootfs"
    populate_busybox_rootfs(root)
    os.chmod(tmp_path, 0o755)
    spec = json.loads(env.ctd.ctr("oci", "spec").stdout)
    spec["root"] = {"path": str(root)}
    spec["process"]["terminal"] = terminal
    spec["process"]["args"] = args
    spec["linux"]["namespaces"].append({"type": "user"})
    spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config = tmp_path / "spec.json"
    config.write_text(json.dumps(spec))
    return config


def test_a_spec_with_a_user_namespace_runs_as_an_unprivileged_ct(env: Pve,  # noqa: F811
                                                                 unique_id: str,
                                                                 tmp_path: Path) -> None:
    """A spec with a user namespace and PVE's own mapping (0:100000:65536) becomes an
    ``unprivileged: 1`` CT; the program is the CT's mapped root, and its output and status
    reach ctr. (``ctr run --config``: ``ctr run --uidmap`` sends runc's task options, which
    replace the runtime options naming this backend's configuration.)"""
    config = unprivileged_spec(env, tmp_path, terminal=False, args=[
        "sh", "-c", "id -u; cat /proc/self/uid_map; stat -c %u /bin/busybox; "
        "echo hi > /tmp/x && cat /tmp/x; exit 3"])
    r = env.ctd.ctr("run", "--rm", "--config", str(config), "--runtime", PROXMOX_RUNTIME,
                    "--runtime-config-path", str(env.config), unique_id, check=False,
                    timeout=180)
    assert r.returncode == 3, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    assert lines[0] == "0" and lines[1].split() == ["0", "100000", "65536"], r.stdout
    assert lines[2:] == ["0", "hi"], "the image's files are the CT root's"
    assert env.cts() == {}
    templates = [c for c in env.api("GET", f"/nodes/{env.pve.node}/lxc")
                 if str(c.get("template", 0)) == "1"]
    assert len(templates) == 1
    conf = env.api("GET", f"/nodes/{env.pve.node}/lxc/{templates[0]['vmid']}/config")
    assert conf["unprivileged"] == 1, "the image's template is unprivileged too"
    assert env.leftovers() == []


def test_an_unprivileged_ct_with_a_terminal(env: Pve, unique_id: str,  # noqa: F811
                                            tmp_path: Path) -> None:
    """``process.terminal`` in an unprivileged CT: the shim's pty slave, bind-mounted from
    ``/dev/pts`` by the CT's mapped root, is the program's controlling terminal."""
    import re

    from tests.integration.test_task_api import run_on_pty

    config = unprivileged_spec(env, tmp_path, terminal=True, args=[
        "sh", "-c", "tty; id -u; cat /proc/self/uid_map; exit 5"])
    try:
        rc, out = run_on_pty(
            ["ctr", "--address", env.ctd.address, "run", "-t", "--rm", "--config", str(config),
             "--runtime", PROXMOX_RUNTIME, "--runtime-config-path", str(env.config),
             unique_id], rows=24, cols=80)
    finally:
        env.ctd.remove_container(unique_id)
    assert rc == 5, out
    assert re.search(r"^/dev/\.lxcri/fd0\r?$", out, re.M), out
    assert re.search(r"^\s*0\s+100000\s+65536\r?$", out, re.M), out
    assert env.leftovers() == []


def test_an_oom_kill_is_reported(env: Pve, unique_id: str) -> None:  # noqa: F811
    """The spec's memory limit is the CT's (``memory``), and an OOM kill in the CT's cgroup is
    containerd's ``/tasks/oom`` before ``/tasks/exit``, once, as for the LXC backend
    (tests/integration/test_task_api.py ``test_oom_is_reported``)."""
    from tests.harness.events import Events

    events = Events(env.ctd)
    try:
        r = env.ctd.ctr("run", "--rm", "--runtime", PROXMOX_RUNTIME, "--runtime-config-path",
                        str(env.config), "--memory-limit", str(32 * 1024 * 1024), env.image,
                        unique_id, "tail", "/dev/zero", check=False, timeout=120)
        assert r.returncode == 137, (r.returncode, r.stdout, r.stderr)
        events.assert_one_oom_before_exit(unique_id)
    finally:
        events.close()
        env.ctd.remove_container(unique_id)
    assert env.leftovers() == []
