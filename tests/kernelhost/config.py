"""Pinned versions and paths of the kernel test host. Change a pin here and nowhere else."""

from __future__ import annotations

import os
from pathlib import Path

# Debian's stock kernel. 6.1.0-56 / 6.1.192-2 is what `linux-image-amd64` resolves to in
# bookworm-security on 2026-11-26. Debian keeps only the current ABI on the mirror, so the
# downloaded .debs are cached (vm-test-host.md, "Caveats").
KERNEL_ABI = "6.1.0-56-amd64"
KERNEL_VERSION = "6.1.192-2"
KERNEL_HEADERS_COMMON = "linux-headers-6.1.0-56-common"
KERNEL_KBUILD = "linux-kbuild-6.1"

# OpenZFS from bookworm contrib; the module is built from zfs-dkms's source against the
# headers above (vm-test-host.md, "OpenZFS").
ZFS_VERSION = "2.1.11-1+deb12u1"
ZFS_SOURCE_DIR = "usr/src/zfs-2.1.11"
ZFS_USERLAND = ("zfsutils-linux", "libzfs4linux", "libnvpair3linux", "libuutil3linux",
                "libzpool5linux")

# apparmor_parser and aa-status come from the .deb, unpacked into the guest only.
GUEST_TOOLS: tuple[tuple[str, str], ...] = (("apparmor", "3.0.8-3"),)

# Debian archives for the private apt configuration (contrib is needed for ZFS; the system's
# sources.list is never touched).
APT_SOURCES = """\
deb http://deb.debian.org/debian bookworm main contrib
deb http://deb.debian.org/debian bookworm-updates main contrib
deb http://deb.debian.org/debian-security bookworm-security main contrib
"""

# Modules loaded in the initramfs to reach the host root: virtio PCI transport, 9p over virtio
# and overlayfs (vm-test-host.md, "Host userspace in the guest").
INITRAMFS_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")

# Modules the guest loads before the tests. 8021q/bridge/veth/dummy: VLAN tests. The *_diag
# modules and nf_tables: CRIU's kerndat (socket dumping, nft table creation); crc32c_generic
# first because busybox-style loaders ignore libcrc32c's softdep (vm-test-host.md, "CRIU").
# autofs4 makes `criu check --all` clean. zfs last: it is the slowest to load.
GUEST_MODULES = ("8021q", "bridge", "veth", "dummy", "unix_diag", "inet_diag", "tcp_diag",
                 "udp_diag", "raw_diag", "netlink_diag", "af_packet_diag",
                 "crc32c_generic", "nf_tables", "autofs4", "zfs")

QEMU_CPU = os.environ.get("LXCRI_QEMU_CPU", "max")
GUEST_MEMORY_MB = 2048
GUEST_CPUS = 2
# Batches are split into shards, one VM each, run side by side (see vm.py). A shard is only
# worth its ~20 s of boot and pytest start-up if it gets at least MIN_SHARD_S of tests;
# tests never seen before count UNKNOWN_TEST_S (durations.json in the cache has the rest).
MIN_SHARD_S = 30.0
UNKNOWN_TEST_S = 5.0
# Whole-batch timeout (boot + tests). Override with LXCRI_KERNEL_TIMEOUT (seconds).
DEFAULT_TIMEOUT_S = 600.0


def cache_root() -> Path:
    """Where fetched .debs, the kernel, the built ZFS module and initramfs images live.

    Outside the checkout so `git clean` and a fresh clone keep the 6-minute ZFS build.
    """
    return Path(os.environ.get("LXCRI_KERNEL_CACHE", "/var/cache/proxmox-lxcri/kernel-host"))


def timeout_s() -> float:
    return float(os.environ.get("LXCRI_KERNEL_TIMEOUT", DEFAULT_TIMEOUT_S))


def shards() -> int:
    """Parallel boots per batch: LXCRI_KERNEL_SHARDS, else one per host CPU, at most 4.

    Each TCG guest runs one serial pytest and keeps about one host core busy.
    """
    env = os.environ.get("LXCRI_KERNEL_SHARDS")
    if env:
        return max(1, int(env))
    return max(1, min(4, os.cpu_count() or 1))
