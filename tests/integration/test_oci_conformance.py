"""OCI conformance probes: each container checks one property from the inside against what its
``config.json`` asked (config.md, config-linux.md), through the real LXC backend.

Every probe runs a busybox shell snippet whose output (stdout and stderr, via a ``file://``
stdio URI) is compared with the spec's request. Each test has its own temp dirs and container
name; the fixture deletes the container and unmounts even when the test fails.
"""

from __future__ import annotations

import copy
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.oci_probe import CTR_SECCOMP, SKIPS, Probe, busybox, probe

pytestmark = SKIPS
__all__ = ["busybox", "probe"]  # fixtures used by name


def status_field(output: str, name: str) -> str:
    return next(ln.split(":", 1)[1].strip() for ln in output.splitlines()
                if ln.startswith(name + ":"))


@pytest.mark.asyncio
async def test_user_uid_gid_and_groups(probe: Probe) -> None:
    spec = probe.spec("id -u; id -g; id -G")
    spec["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [10, 20]}
    assert await probe.run(spec) == (0, "1000\n1001\n1001 10 20\n")


@pytest.mark.asyncio
async def test_umask(probe: Probe) -> None:
    spec = probe.spec("umask")
    spec["process"]["user"]["umask"] = 0o027
    assert await probe.run(spec) == (0, "0027\n")


@pytest.mark.asyncio
async def test_env_and_cwd(probe: Probe) -> None:
    spec = probe.spec('echo "$GREETING"; pwd')
    spec["process"]["env"].append("GREETING=hello world")
    spec["process"]["cwd"] = "/tmp"
    assert await probe.run(spec) == (0, "hello world\n/tmp\n")


@pytest.mark.asyncio
async def test_hostname_and_domainname(probe: Probe) -> None:
    spec = probe.spec("hostname; cat /proc/sys/kernel/domainname", hostname="probe-host",
                      domainname="example.org")
    assert await probe.run(spec) == (0, "probe-host\nexample.org\n")


@pytest.mark.asyncio
async def test_capability_sets(probe: Probe) -> None:
    caps = ["CAP_KILL", "CAP_NET_RAW"]  # bits 5 and 13
    spec = probe.spec("grep ^Cap /proc/self/status")
    spec["process"]["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
    status, out = await probe.run(spec)
    assert status == 0, out
    want = format((1 << 5) | (1 << 13), "016x")
    assert [status_field(out, f) for f in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb")] \
        == [want, want, want, "0" * 16, "0" * 16]


@pytest.mark.asyncio
async def test_no_new_privileges(probe: Probe) -> None:
    spec = probe.spec("grep NoNewPrivs /proc/self/status")
    spec["process"]["noNewPrivileges"] = True
    status, out = await probe.run(spec)
    assert status_field(out, "NoNewPrivs") == "1"


@pytest.mark.asyncio
async def test_seccomp_denied_syscall_fails_with_the_asked_errno(probe: Probe) -> None:
    spec = probe.spec("mkdir /tmp/denied; echo rc=$?; grep ^Seccomp: /proc/self/status")
    spec["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 36}]}  # ENAMETOOLONG: unmistakable
    status, out = await probe.run(spec)
    assert "File name too long" in out and "rc=1" in out, out
    assert status_field(out, "Seccomp") == "2"


@pytest.mark.asyncio
async def test_containerd_default_seccomp_profile_runs_a_shell(probe: Probe) -> None:
    spec = probe.spec("echo ok; grep ^Seccomp: /proc/self/status")
    spec["linux"]["seccomp"] = copy.deepcopy(CTR_SECCOMP["linux"]["seccomp"])
    status, out = await probe.run(spec)
    assert status == 0 and out.startswith("ok\n"), out
    assert status_field(out, "Seccomp") == "2"


@pytest.mark.asyncio
async def test_rlimits(probe: Probe) -> None:
    spec = probe.spec("ulimit -n; ulimit -Hn")
    spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024}]
    assert await probe.run(spec) == (0, "512\n1024\n")


@pytest.mark.asyncio
async def test_readonly_root_with_a_writable_tmpfs(probe: Probe) -> None:
    spec = probe.spec("touch /x 2>&1; touch /scratch/y && echo tmpfs-ok",
                      mounts=[{"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                               "options": ["rw", "size=1m"]}])
    spec["root"]["readonly"] = True
    status, out = await probe.run(spec)
    assert "Read-only file system" in out and "tmpfs-ok" in out, out
    assert not (probe.busybox / "x").exists()


@pytest.mark.asyncio
async def test_masked_and_readonly_paths(probe: Probe) -> None:
    spec = probe.spec("wc -c < /proc/timer_list; ls /proc/driver | wc -l; "
                      "echo 1 > /proc/sys/kernel/shmmni; cat /proc/sys/kernel/ostype")
    spec["linux"]["maskedPaths"] = ["/proc/timer_list", "/proc/driver", "/proc/nothere"]
    spec["linux"]["readonlyPaths"] = ["/proc/sys"]
    status, out = await probe.run(spec)
    lines = out.splitlines()
    assert lines[:2] == ["0", "0"], out
    assert "Read-only file system" in out and lines[-1] == "Linux", out


@pytest.mark.asyncio
async def test_bind_mounts_ro_and_rw(probe: Probe) -> None:
    src = probe.base / "vol"
    src.mkdir()
    (src / "hello").write_text("from host\n")
    spec = probe.spec("cat /ro/hello; touch /ro/no 2>&1; echo data > /rw/yes",
                      mounts=[{"destination": "/ro", "type": "bind", "source": str(src),
                               "options": ["rbind", "ro"]},
                              {"destination": "/rw", "type": "bind", "source": str(src),
                               "options": ["rbind", "rw"]}])
    status, out = await probe.run(spec)
    assert out.startswith("from host\n") and "Read-only file system" in out, out
    assert (src / "yes").read_text() == "data\n" and not (src / "no").exists()


@pytest.mark.asyncio
async def test_namespaced_sysctl_leaves_the_host_alone(probe: Probe) -> None:
    host = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    want = "0" if host.strip() == "1" else "1"
    spec = probe.spec("cat /proc/sys/net/ipv4/ip_forward")
    spec["linux"]["sysctl"] = {"net.ipv4.ip_forward": want}
    assert await probe.run(spec) == (0, want + "\n")
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host


@pytest.mark.asyncio
async def test_device_nodes(probe: Probe) -> None:
    spec = probe.spec("stat -c '%F %t %T %a %u %g' /dev/fuse")
    spec["linux"]["devices"] = [{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229,
                                 "fileMode": 0o620, "uid": 0, "gid": 5}]
    assert await probe.run(spec) == (0, "character special file a e5 620 0 5\n")


@pytest.mark.asyncio
async def test_device_cgroup_denies_what_the_spec_denies(probe: Probe) -> None:
    spec = probe.spec("mknod /tmp/sda b 8 0 2>&1; echo rc=$?; echo > /dev/null && echo null-ok")
    spec["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    status, out = await probe.run(spec)
    assert "rc=1" in out and "null-ok" in out, out


@pytest.mark.asyncio
async def test_oom_score_adj(probe: Probe) -> None:
    spec = probe.spec("cat /proc/self/oom_score_adj")
    spec["process"]["oomScoreAdj"] = 123
    assert await probe.run(spec) == (0, "123\n")


@pytest.mark.asyncio
async def test_memory_pids_and_cpu_limits_in_the_cgroup(probe: Probe) -> None:
    # cgroup:mixed shows the container its own cgroup; v1 (this host) or v2 (Proxmox) files.
    script = ("if [ -e /sys/fs/cgroup/memory.max ]; then cd /sys/fs/cgroup; "
              "cat memory.max pids.max cpu.max; else "
              "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max "
              "/sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us; fi")
    spec = probe.spec(script)
    spec["linux"]["resources"] = {"memory": {"limit": 64 << 20}, "pids": {"limit": 77},
                                  "cpu": {"quota": 50000, "period": 100000}}
    status, out = await probe.run(spec)
    assert out.split() == ["67108864", "77", "50000", "100000"], out


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"ocit-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "probe0", "type", "veth",
                        "peer", "name", "probe1"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.mark.asyncio
async def test_joined_network_namespace(probe: Probe, netns: str) -> None:
    spec = probe.spec("grep -o probe0 /proc/net/dev")
    spec["linux"]["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    spec["linux"]["namespaces"].append({"type": "network", "path": f"/var/run/netns/{netns}"})
    assert await probe.run(spec) == (0, "probe0\n")


@pytest.mark.asyncio
async def test_user_namespace_with_mappings(probe: Probe) -> None:
    spec = probe.spec("cat /proc/self/uid_map /proc/self/gid_map; id -u")
    spec["linux"]["namespaces"].append({"type": "user"})
    spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    status, out = await probe.run(spec)
    assert [ln.split() for ln in out.splitlines()] == [
        ["0", "200000", "65536"], ["0", "200000", "65536"], ["0"]], out
