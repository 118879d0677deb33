"""The checks that pass on runc and fail on ``proxmox-lxcri``, each with its cause: the one
list that docs/oci-support.md ("OCI runtime-tools validation") and the conformance test share.
The test asserts that every entry of the programs it runs still fails (strict xfail), so a fix
forces the removal of its entry here; ``runtime_tools.py`` marks a difference not listed here
as NEW, lists entries that are no longer differences, and exits 1 on either.

Key: (program in ``suite.py``, check description as the program prints it). Measured on
2026-12-06 (LXC 5.0.2, runc 1.1.5, cgroup v1 host), after the one start path and the
cgroupsPath work of issue 13 landed; the 24 earlier entries (PID 1, capabilities, namespaces
by path, propagation, masked FIFOs, seccomp rules, cgroupsPath) were removed as they passed.
"""

from __future__ import annotations

KNOWN: dict[tuple[str, str], str] = {
    ("pidfile", "the pid file is state.pid"):
        "--pid-file receives the monitor's PID (the process the caller's subreaper inherits "
        "and waits for, docs/cli.md), state.pid the program's; runc writes the program's PID "
        "to both",
}
