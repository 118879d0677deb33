#!/usr/bin/env bash
# The test suite in three reported parts: the host suite (unit + integration against the real
# containerd, LXC, zfs-fuse and network namespaces), the kernel test host batch (QEMU with
# Debian 12's stock kernel) and the pve9 batch (QEMU with Debian 13: systemd, LXC 6, OpenZFS
# 2.3; docs/kernel-test-host.md, "The pve9 flavour"). pytest's exit status 5 ("no tests collected") counts as a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${VENV:-$PWD/.venv}/bin/python
status=0

part() {
    local name=$1; shift
    local t0=$SECONDS rc
    echo "=== $name"
    "$PY" -m pytest "$@"
    rc=$?
    echo "=== $name: pytest exit status $rc after $((SECONDS - t0)) s"
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 5 ] && echo "=== $name: no tests were collected; that is a failure"
        status=1
    fi
}

part "host suite" tests -m "not kernel" -q -p no:cacheprovider
# -p loads the kernel host plugin for `kernel` tests anywhere under tests/ (it boots Debian's
# stock kernel in QEMU once per batch and reports each guest result here).
part "kernel test host batch" -p tests.kernelhost.plugin -m kernel tests -q -p no:cacheprovider
# Tests marked pve9 (tests/integration's acceptance tests among them) run again, in Debian 13.
part "pve9 test host batch" -p tests.kernelhost.plugin -m pve9 tests -q -p no:cacheprovider
exit $status
