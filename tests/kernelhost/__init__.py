"""The kernel test host: Debian's stock kernel in a throw-away QEMU (TCG) VM.

This machine's kernel has no 802.1Q, no bridge VLAN filtering, no AppArmor, a CRIU that cannot
run and no ZFS module (see /work/shared/docs/environment.md). ``pytest`` items marked
``kernel`` are therefore not run on the host: the plugin in :mod:`tests.kernelhost.plugin`
boots one VM per batch, runs the items there with the project's own code and venv (the host
root is shared read-only over 9p), and reports each item's guest result as the host result.
See docs/kernel-test-host.md.
"""
