"""OCI specs for the golden tests of the LXC translation (inputs; the outputs are golden)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

MINIMAL: dict[str, Any] = {
    "ociVersion": "1.0.2",
    "process": {"args": ["/bin/sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
    "root": {"path": "rootfs"},
    "linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "network", "ipc", "uts")]},
}

# What `ctr run` (containerd 1.6 oci.WithDefaultSpec + image config) generates.
_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
         "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
         "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
CTR_DEFAULT: dict[str, Any] = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": ["echo", "hi"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "cwd": "/",
        "capabilities": {"bounding": _CAPS, "effective": _CAPS, "permitted": _CAPS},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs"},
    "hostname": "web-1",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                     "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "cgroupsPath": "/default/web-1",
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                       {"type": "network"}],
        "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                        "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"],
    },
}


def _pod_member() -> dict[str, Any]:
    """A CRI container in a pod: joins the pod's netns (CNI), IPC and UTS; binds volumes."""
    spec = copy.deepcopy(CTR_DEFAULT)
    del spec["hostname"]
    spec["process"]["args"] = ["/usr/bin/nginx", "-g", "daemon off;"]
    spec["process"]["env"].append("GREETING=hello world")
    spec["process"]["cwd"] = "/srv/www"
    spec["process"]["user"] = {"uid": 101, "gid": 101, "additionalGids": [101, 4242]}
    spec["linux"]["namespaces"] = [
        {"type": "pid"}, {"type": "mount"},
        {"type": "network", "path": "/var/run/netns/cni-1234-abcd"},
        {"type": "ipc", "path": "/proc/4242/ns/ipc"},
        {"type": "uts", "path": "/proc/4242/ns/uts"},
    ]
    spec["mounts"] += [
        {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/pod/hosts",
         "options": ["rbind", "rprivate", "ro"]},
        {"destination": "/var/www/my data", "type": "bind", "source": "/srv/volumes/v 1",
         "options": ["rbind", "rw"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]
    return spec


POD_MEMBER = _pod_member()


def _host_network() -> dict[str, Any]:
    spec = copy.deepcopy(MINIMAL)
    spec["process"]["args"] = ["sleep", "3600"]
    spec["linux"]["namespaces"] = [{"type": "pid"}, {"type": "mount"}]
    return spec


#: A spec without network/ipc/uts namespaces: the host's are kept, no hostname is set.
HOST_NAMESPACES = _host_network()

#: What `ctr containers create --seccomp` (containerd 1.6) generated on this host, verbatim.
CTR_SECCOMP: dict[str, Any] = json.loads(
    (Path(__file__).with_name("ctr_seccomp_spec.json")).read_text())


def _everything() -> dict[str, Any]:
    """One spec using every section the translation renders (read by the golden tests)."""
    spec = copy.deepcopy(MINIMAL)
    spec["hostname"] = "full"
    spec["domainname"] = "example.org"
    spec["process"].update({
        "args": ["/bin/sh", "-c", "exit 0"],
        "env": ["PATH=/bin", "A=b c"],
        "cwd": "/tmp",
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 0o077},
        "capabilities": {"bounding": ["CAP_NET_RAW", "CAP_KILL"], "effective": ["CAP_KILL"],
                         "permitted": ["CAP_KILL"], "inheritable": ["CAP_KILL"],
                         "ambient": ["CAP_KILL"]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
                    {"type": "RLIMIT_CORE", "soft": 0, "hard": 2**64 - 1}],
        "noNewPrivileges": True,
        "oomScoreAdj": 500,
        "apparmorProfile": "lxcri-test",
        "selinuxLabel": "system_u:system_r:container_t:s0:c1,c2",
    })
    spec["root"]["readonly"] = True
    spec["mounts"] = [
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro"]},
        {"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["ro"]},
    ]
    spec["linux"].update({
        "namespaces": [{"type": t} for t in ("pid", "mount", "network", "ipc", "uts",
                                             "cgroup", "user")],
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "sysctl": {"net.ipv4.ip_forward": "1", "kernel.shmmni": "8192"},
        "devices": [{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229,
                     "fileMode": 0o620, "uid": 0, "gid": 5},
                    {"type": "c", "path": "/dev/null", "major": 1, "minor": 3}],
        "resources": {
            "devices": [{"allow": False, "access": "rwm"},
                        {"allow": True, "type": "c", "major": 10, "minor": 229,
                         "access": "rw"}],
            "memory": {"limit": 67108864, "reservation": 33554432, "swap": 134217728,
                       "swappiness": 10},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0",
                    "mems": "0"},
            "pids": {"limit": 64},
            "blockIO": {"weight": 500},
        },
        "cgroupsPath": "/lxcri/full",
        "rootfsPropagation": "rslave",
        "maskedPaths": ["/proc/kcore", "/proc/acpi"],
        "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        "seccomp": {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["personality"], "action": "SCMP_ACT_KILL_PROCESS",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0,
                           "op": "SCMP_CMP_MASKED_EQ"}]},
            ],
        },
    })
    return spec


EVERYTHING = _everything()

CASES: dict[str, dict[str, Any]] = {
    "minimal": MINIMAL,
    "ctr-default": CTR_DEFAULT,
    "pod-member-netns": POD_MEMBER,
    "host-namespaces": HOST_NAMESPACES,
    "ctr-seccomp": CTR_SECCOMP,
    "everything": EVERYTHING,
}
