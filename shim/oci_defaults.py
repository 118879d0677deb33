"""What ``proxmox-lxcri spec`` writes and ``proxmox-lxcri features`` prints (pure data).

The default spec follows ``runc spec`` (a shell in ``rootfs``, runc's default capabilities,
masked and read-only paths) with one difference: ``process.terminal`` is false, so the bundle
runs without a ``--console-socket`` (``create`` passes the caller's stdio through instead).
The features document follows the OCI "features" structure (features.md) for what
:mod:`runtime.oci` accepts and :mod:`runtime.lxc.config` honours (docs/oci-support.md).
"""

from __future__ import annotations

from typing import Any

from runtime import oci

#: runc's default capability set (``runc spec``).
DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
          "/proc/scsi"]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def default_spec() -> dict[str, Any]:
    caps = list(DEFAULT_CAPS)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "proxmox-lxcri",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount",
                                                 "cgroup")],
            "maskedPaths": list(MASKED),
            "readonlyPaths": list(READONLY),
        },
    }


def features(cgroup_version: str) -> dict[str, Any]:
    """The OCI features document (features.md)."""
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": list(oci.HOOK_KINDS),
        "mountOptions": ["ro", "rw", "bind", "rbind", "nosuid", "nodev", "noexec", "relatime",
                         "strictatime", "private", "rprivate", "slave", "rslave", "shared",
                         "rshared"],
        "linux": {
            "namespaces": ["pid", "network", "mount", "ipc", "uts", "user", "cgroup"],
            "capabilities": list(oci.CAPABILITIES),
            "cgroup": {"v1": cgroup_version == "v1", "v2": cgroup_version == "v2",
                       "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {"enabled": True,
                        "actions": [a for a in oci.SECCOMP_ACTIONS if a != "SCMP_ACT_NOTIFY"],
                        "operators": list(oci.SECCOMP_OPS),
                        "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]},
            "apparmor": {"enabled": True},
            "selinux": {"enabled": True},
            "intelRdt": {"enabled": False},
        },
        "annotations": {"io.github.proxmox-lxcri.backend": "lxc",
                        "io.github.proxmox-lxcri.lxc.version": "5"},
    }
