#!/bin/bash
# Stage 2 of the kernel test host, PID 1 on the overlay (host root read-only + tmpfs upper).
# It prepares what LXC, CRIU, AppArmor and ZFS need, runs the batch with the project's own
# python (tests/kernelhost/guest.py) and powers the VM off. Everything it prints goes to the
# serial console, which the host keeps as the console log.
# The job comes from the writable 9p export "results": job.env (shell variables) and job.json.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
R=/run/lxcri-kernel-results

off() {
    sync
    # busybox's poweroff -f is reboot(RB_POWER_OFF): QEMU exits with rc 0 (vm-test-host.md).
    /bin/busybox poweroff -f
}
step() { echo "LXCRI-KERNEL-HOST: $*"; }
fail() { step "stage2 failed: $*"; off; }

step "stage2 start at uptime $(cut -d' ' -f1 /proc/uptime) s"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run || fail "tmpfs /run"
mkdir -p $R
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=262144 results $R || fail "mount results"
# shellcheck source=/dev/null
. $R/job.env || fail "no job.env"

# /tmp as tmpfs (LXC rootfs, ZFS file vdevs) unless the checkout itself lives under /tmp.
case "$LXCRI_ROOTDIR/" in
    /tmp/*) ;;
    *) mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp ;;
esac
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t mqueue mqueue /dev/mqueue
# Pure cgroup2: LXC 5 and CRIU 3.17 both handle the unified hierarchy, and the guest has no
# systemd to set up a hybrid layout.
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || fail "cgroup2"
# Enable every controller below the root, as systemd does on a Proxmox VE node: otherwise a
# container's cgroup has no memory.*, pids.* or cpu.* files (cgroup-v2.rst, "Enabling and
# Disabling").
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
	echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
done
# AppArmor's interface lives in securityfs; the Debian kernel has AppArmor enabled by default
# (CONFIG_LSM lists apparmor), only the mount is missing (vm-test-host.md, "AppArmor").
mount -t securityfs securityfs /sys/kernel/security
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
hostname lxcri-kernel-host
# CRIU's kerndat needs loopback up (kerndat_tcp_repair, vm-test-host.md "CRIU").
ip link set lo up

# CRIU locks the network of a dumped net namespace with iptables-restore by default; the host
# has no iptables, but CRIU 3.17 links libnftables and can lock with an nft table instead
# (nf_tables is loaded below). CRIU reads /etc/criu/default.conf for every invocation,
# including the ones lxc-checkpoint makes.
if [ ! -e /etc/criu/default.conf ]; then
    mkdir -p /etc/criu
    echo "network-lock nftables" > /etc/criu/default.conf
fi

step "mounts done at uptime $(cut -d' ' -f1 /proc/uptime) s"
# No ldconfig (5 s over 9p under TCG): the ZFS libraries are in /usr/lib/x86_64-linux-gnu of
# an overlay layer, and ld.so searches that default directory for sonames missing from the
# host's ld.so.cache.

step "modprobe at uptime $(cut -d' ' -f1 /proc/uptime) s"
for m in $LXCRI_MODULES; do
    modprobe "$m" || step "modprobe $m failed"
done
step "stage2 ready at uptime $(cut -d' ' -f1 /proc/uptime) s"

cd "$LXCRI_ROOTDIR" || fail "cd $LXCRI_ROOTDIR"
"$LXCRI_PYTHON" -m tests.kernelhost.guest "$R/job.json"
echo "$?" > $R/exit-code
step "batch done at uptime $(cut -d' ' -f1 /proc/uptime) s"
off
