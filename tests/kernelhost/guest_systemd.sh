#!/bin/bash
# The test job of the pve9 kernel test host, run by lxcri-test.service under systemd (PID 1)
# on a Debian 13 root filesystem (tests/kernelhost/cache.py, ensure_rootfs). The counterpart of
# guest_stage2.sh, minus what systemd already did: /run, /tmp, /dev/pts, /dev/shm, mqueue,
# cgroup2 (pure: systemd 257's only layout), securityfs, debugfs, bpf, the hostname's mount.
# Everything it prints goes to the serial console (StandardOutput=tty), which the host keeps.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
R=/run/lxcri-kernel-results
step() { echo "LXCRI-KERNEL-HOST: $*"; }
fail() { step "guest job failed: $*"; exit 1; }

step "test unit start at uptime $(cut -d' ' -f1 /proc/uptime) s"
mkdir -p $R
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=262144 results $R || fail "mount results"
# shellcheck source=/dev/null
. $R/job.env || fail "no job.env"

# The project's checkout and interpreter come from the host root (9p, read-only, moved to
# /mnt/host by the initramfs). A tmpfs overlay makes them writable as in the kernel flavour,
# and each host path is bound at the same path here, so the venv's absolute paths hold.
H=/run/lxcri-host
mkdir -p $H/upper $H/work $H/root
mount -t overlay -o lowerdir=/mnt/host,upperdir=$H/upper,workdir=$H/work overlay $H/root \
    || fail "overlay of the host root"
for p in $LXCRI_HOST_PATHS; do
    mkdir -p "$p" && mount --bind "$H/root$p" "$p" || fail "bind $p from the host"
done

# LXC escapes to the root cgroup (lxc.cgroup.relative = 0, the default), so the containers'
# cgroups sit below / as on a Proxmox VE node: enable every controller there, as PVE's systemd
# does for its slices (cgroup-v2.rst, "Enabling and Disabling").
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
done
# CRIU's network lock: nftables, as in the kernel flavour (no iptables in the root filesystem).
if [ ! -e /etc/criu/default.conf ]; then
    mkdir -p /etc/criu
    echo "network-lock nftables" > /etc/criu/default.conf
fi
ip link set lo up

step "modprobe at uptime $(cut -d' ' -f1 /proc/uptime) s"
for m in $LXCRI_MODULES; do
    modprobe "$m" || step "modprobe $m failed"
done
step "guest ready at uptime $(cut -d' ' -f1 /proc/uptime) s"

cd "$LXCRI_ROOTDIR" || fail "cd $LXCRI_ROOTDIR"
"$LXCRI_PYTHON" -m tests.kernelhost.guest "$R/job.json"
echo "$?" > $R/exit-code
sync
step "batch done at uptime $(cut -d' ' -f1 /proc/uptime) s"
