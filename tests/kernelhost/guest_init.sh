#!/bin/busybox sh
# Stage 1 of the kernel test host: /init of the initramfs (busybox sh as PID 1).
# It mounts the host's root (9p, read-only) under an overlay with a tmpfs upper, then hands
# PID 1 to stage 2 (tests/kernelhost/guest_stage2.sh, read from the host root).
# Kernel command line parameters read here (the host writes them; see vm.py):
#   lxcri.layers=A:B:C  extra read-only overlay layers, highest first, as paths inside the
#                       cache export "kcache" (a separate 9p export of the host's cache dir)
#   lxcri.stage2=PATH   stage 2 script (host path)
#   lxcri.init=PATH     (pve9 flavour) the layers hold a whole root filesystem: the host root is
#                       not a layer but is moved to /mnt/host of the new root; the stage 2
#                       script becomes /usr/local/sbin/lxcri-guest and the unit files of
#                       lxcri.units=DIR (host path) go to /etc/systemd/system; then PATH
#                       (systemd) is exec'ed as PID 1.
bb=/bin/busybox

fail() {
    echo "LXCRI-KERNEL-HOST: stage1 failed: $*"
    $bb poweroff -f
}

$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev

# virtio_pci, 9pnet_virtio, 9p and overlay with their dependencies, in the order the host's
# `modprobe --show-depends` gave (busybox insmod does no dependency resolution).
while read -r ko; do
    $bb insmod "/modules/$ko" || fail "insmod $ko"
done < /modules/order

layers= stage2= init= units=
for arg in $($bb cat /proc/cmdline); do
    case "$arg" in
        lxcri.layers=*) layers=${arg#lxcri.layers=} ;;
        lxcri.stage2=*) stage2=${arg#lxcri.stage2=} ;;
        lxcri.init=*) init=${arg#lxcri.init=} ;;
        lxcri.units=*) units=${arg#lxcri.units=} ;;
    esac
done
[ -n "$stage2" ] || fail "no lxcri.stage2= on the command line"

# cache=loose: the host root is read-only for the VM's lifetime, so caching it in the guest is
# safe and makes imports from the 9p root much faster (vm-test-host.md, step 4).
$bb mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /mnt/host \
    || fail "mount 9p hostroot"
$bb mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose kcache /mnt/cache \
    || fail "mount 9p kcache"
$bb mount -t tmpfs -o mode=0755 rw /mnt/rw || fail "mount tmpfs"
$bb mkdir -p /mnt/rw/upper /mnt/rw/work
lower=
for l in $($bb echo "$layers" | $bb tr ':' ' '); do
    lower="$lower/mnt/cache/$l:"
done
if [ -n "$init" ]; then
    # A root filesystem of its own: the layers only (the last one is the root filesystem).
    $bb mount -t overlay -o "lowerdir=${lower%:},upperdir=/mnt/rw/upper,workdir=/mnt/rw/work" \
        overlay /newroot || fail "mount overlay"
    $bb mkdir -p /newroot/mnt/host /newroot/usr/local/sbin /newroot/etc/systemd/system
    $bb cp "/mnt/host$stage2" /newroot/usr/local/sbin/lxcri-guest || fail "copy $stage2"
    $bb cp "/mnt/host$units"/* /newroot/etc/systemd/system/ || fail "copy units of $units"
    # Newer than /usr: systemd's ConditionNeedsUpdate= units (ldconfig, hwdb and journal
    # catalog rebuilds, update-done; 4 s of a TCG boot) have nothing to do in a fresh tree.
    $bb touch /newroot/etc/.updated /newroot/var/.updated
    # A virtio 9p export can be mounted only once: the host root moves into the new root.
    $bb mount --move /mnt/host /newroot/mnt/host || fail "move the host root"
    $bb mount --move /proc /newroot/proc
    $bb mount --move /sys /newroot/sys
    $bb mount --move /dev /newroot/dev
    exec $bb switch_root /newroot "$init"
fi
$bb mount -t overlay -o "lowerdir=${lower}/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work" \
    overlay /newroot || fail "mount overlay"

$bb mount --move /proc /newroot/proc
$bb mount --move /sys /newroot/sys
$bb mount --move /dev /newroot/dev
# PID 1 itself changes root (switch_root execs stage 2 as PID 1): ZFS opens file vdevs from
# kernel taskq threads that use PID 1's root, so a chroot from a child would break
# `zpool create` (vm-test-host.md, OpenZFS gotcha 1).
exec $bb switch_root /newroot /bin/bash "$stage2"
