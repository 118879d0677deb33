"""Package names, archives and paths of the kernel test host (versions: resolve.py, at run time)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tests.kernelhost.resolve import Wanted

# No Debian version is written here: every package is resolved from the archive's index at run
# time (resolve.py; issue 11: a pinned kernel revision vanished from the mirror and broke every
# fresh machine). These are the package *names* the guest is made of.
WANTED = Wanted(flavour="bookworm", kernel_meta="linux-image-amd64", zfs_source="zfs-dkms",
                zfs_utils="zfsutils-linux", guest_tools=("apparmor",))
# Cache entries (one resolution each) kept besides the one in use; older ones are removed.
KEEP_ENTRIES = 2
# The private apt lists are refreshed when older than this; a download that fails on them
# refreshes them at once and resolves again.
LISTS_MAX_AGE_S = 3600.0

# Debian archives for the private apt configuration (contrib is needed for ZFS; the system's
# sources.list is never touched).
APT_SOURCES = """\
deb http://deb.debian.org/debian bookworm main contrib
deb http://deb.debian.org/debian bookworm-updates main contrib
deb http://deb.debian.org/debian-security bookworm-security main contrib
"""

# Packages of the Debian 13 (trixie) root filesystem of the `pve9` flavour, besides Essential:
# what a Proxmox VE 9 node runs containers with (lxc, systemd, containerd, runc, criu, ZFS
# userland, apparmor), busybox-static (the tests' container image), and what the OpenZFS
# module build needs inside that root (make, libc6-dev, file; the kernel headers and their
# gcc-14 come from the resolution). The libraries complete what the host's Python (pyenv
# 3.11, built on Debian 12) and its lib-dynload modules link against (`ldd`): trixie names
# some of them *t64 (the 64-bit time_t transition), with the same sonames. openssl: the
# Proxmox stand-in (tests/pvestandin/server.py) makes its TLS certificate with it;
# ca-certificates: the system CA bundle the Proxmox backend verifies against by default (a
# PVE node has it).
TRIXIE_ROOTFS = ("systemd", "dbus", "lxc", "containerd", "runc", "criu", "zfsutils-linux",
                 "apparmor", "busybox-static", "iproute2", "kmod", "nftables", "procps", "openssl",
                 "ca-certificates",
                 "make", "libc6-dev", "file",
                 "libssl3t64", "libffi8", "libsqlite3-0", "libreadline8t64", "libncursesw6",
                 "libbz2-1.0", "liblzma5", "zlib1g", "libuuid1", "libexpat1", "libcrypt1",
                 "libnsl2", "libtirpc3t64")


@dataclass(frozen=True)
class Flavour:
    """One kind of kernel test host: which Debian release, and how its guest is rooted.

    ``wanted.rootfs`` empty: the guest's root is the host's own root (9p) under the cache's layers,
    and a bash script is PID 1 (the `kernel` flavour). Otherwise a root filesystem of these
    packages is built from the archive (mmdebstrap) and systemd is PID 1 (the `pve9` flavour).
    """

    name: str                      # the Debian codename, part of every cache key
    marker: str                    # the pytest marker that selects tests for it
    wanted: Wanted
    apt_sources: str
    title: str = ""
    # QEMU's TCG threading: "multi" runs each vCPU on its own host thread, "single" all vCPUs
    # round-robin on one (see TRIXIE for why).
    tcg_thread: str = "multi"

    @property
    def has_rootfs(self) -> bool:
        return bool(self.wanted.rootfs)

    @property
    def apt_dir(self) -> str:
        # "apt" for bookworm: the directory of the layout before flavours existed.
        return "apt" if self.name == "bookworm" else f"apt-{self.name}"


BOOKWORM = Flavour(name="bookworm", marker="kernel", wanted=WANTED, apt_sources=APT_SOURCES,
                   title="Debian's stock kernel")
TRIXIE = Flavour(
    name="trixie", marker="pve9",
    # apparmor is part of the root filesystem here, not a separate tools layer.
    wanted=Wanted(flavour="trixie", kernel_meta="linux-image-amd64", zfs_source="zfs-dkms",
                  zfs_utils="zfsutils-linux", guest_tools=(), rootfs=TRIXIE_ROOTFS),
    apt_sources="""\
deb http://deb.debian.org/debian trixie main contrib
deb http://deb.debian.org/debian trixie-updates main contrib
deb http://deb.debian.org/debian-security trixie-security main contrib
""",
    title="Debian 13 (Proxmox VE 9-like: systemd, LXC 6, OpenZFS 2.3)",
    # Debian 13's 6.12 kernel under multi-threaded TCG (QEMU 7.2) sometimes dies early in
    # boot with "Oops: int3" in sched_clock_cpu: the other vCPU still runs a stale translation
    # of code the kernel has just live-patched (static keys, int3-based text_poke_bp), so it
    # hits the int3 after patching ended. One TCG thread for both vCPUs sees each patch at
    # once; the guest keeps 2 CPUs. (Seen in 1 of 6 boots; the batch's pytest is serial, and
    # two shards share the 2 host cores anyway.)
    tcg_thread="single")
FLAVOURS = {f.marker: f for f in (BOOKWORM, TRIXIE)}

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
