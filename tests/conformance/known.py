"""The checks that pass on runc and fail on ``proxmox-lxcri``, each with its cause: the one
list that docs/oci-support.md ("OCI runtime-tools validation") and the conformance test share.
The test asserts that every entry of the programs it runs still fails (strict xfail), so a fix
forces the removal of its entry here; ``runtime_tools.py`` marks a difference not listed here
as NEW and exits 1.

Key: (program in ``suite.py``, check description as the program prints it). Measured on
2026-12-06 (LXC 5.0.2, runc 1.1.5, cgroup v1 host); issue 13 tracks the fixes.
"""

from __future__ import annotations

_PID1 = ("LXC's init (lxc-execute) is PID 1 of the container and the program runs as its "
         "child (PID 2); issue 13 item 1")
_CAPS_ROOT = ("LXC gives a uid-0 program the bounding set as effective and permitted, and "
              "leaves inheritable and ambient empty (lxc.cap.keep is the only capability key); "
              "issue 13 item 1")
_CAPS_USER = ("LXC switches to a non-root uid without keeping capabilities: effective and "
              "permitted are empty, inheritable and ambient never set; issue 13 item 1")

_PIDNS = ("joining a PID namespace is refused (NotImplemented): LXC's init must be PID 1 of "
          "a new one to hold the created state; issue 13 item 5")
_HOSTPID = ("a spec without a pid namespace is refused (NotImplemented: a new pid namespace is "
            "required), for the same reason; issue 13 item 5")

_SCMP = ("a rule whose action equals the default action is rendered when it has argument "
         "conditions, and libseccomp refuses the whole filter (Failed to add rule for syscall "
         "personality): create fails; runc drops such rules; issue 13 item 8")
_FIFO = ("masking a FIFO opens it, which blocks until the start-host gate's 30 s timeout: "
         "create fails; issue 13 item 7")

KNOWN: dict[tuple[str, str], str] = {
    ("default", "process is PID 1 of its PID namespace"): _PID1,
    ("process_capabilities", "process.capabilities.effective is the CapEff set"): _CAPS_ROOT,
    ("process_capabilities", "process.capabilities.permitted is the CapPrm set"): _CAPS_ROOT,
    ("process_capabilities", "process.capabilities.inheritable is the CapInh set"): _CAPS_ROOT,
    ("process_capabilities", "process.capabilities.ambient is the CapAmb set"): _CAPS_ROOT,
    ("process_capabilities_nonroot", "process.capabilities.effective is the CapEff set"):
        _CAPS_USER,
    ("process_capabilities_nonroot", "process.capabilities.permitted is the CapPrm set"):
        _CAPS_USER,
    ("process_capabilities_nonroot", "process.capabilities.inheritable is the CapInh set"):
        _CAPS_USER,
    ("process_capabilities_nonroot", "process.capabilities.ambient is the CapAmb set"):
        _CAPS_USER,
    ("linux_rootfs_propagation", "linux.rootfsPropagation private"):
        "LXC remounts the new root shared after pivot_root, whatever the spec asks; "
        "issue 13 item 7",
    ("linux_rootfs_propagation", "the container ran with rootfsPropagation shared"):
        "the propagation is applied before the pivot, so lxc_pivot_root fails with EINVAL "
        "and create fails; issue 13 item 7",
    ("linux_ns_path", "the container ran joining a PID namespace by path"): _PIDNS,
    ("linux_ns_path", "namespaces pid joined by path"): _PIDNS,
    ("linux_ns_path", "the container ran without a new PID namespace"): _HOSTPID,
    ("linux_ns_path", "no pid namespace: the host's PID namespace"): _HOSTPID,
    ("linux_ns_path",
     "create refuses a namespace path of the wrong type (ipc -> a net namespace)"):
        "a namespace path is handed to LXC (lxc.namespace.share.*) without checking the type "
        "of namespace it is; issue 13 item 5",
    ("linux_seccomp", "the container ran with a rule equal to the default action"): _SCMP,
    ("linux_seccomp", "linux.seccomp: a rule equal to the default action is accepted"): _SCMP,
    ("linux_masked_paths_fifo", "the container ran with a masked FIFO"): _FIFO,
    ("linux_masked_paths_fifo", "linux.maskedPaths masks a FIFO"): _FIFO,
    ("kill_pid1", "a program without a TERM handler keeps running after TERM"):
        "the program is not PID 1: LXC's init takes TERM, signals every process and stops "
        "the container; issue 13 item 1",
    ("kill_pid1", "kill KILL"):
        "the container had already stopped on TERM (the previous check), so kill fails as on "
        "any stopped container; issue 13 item 1",
    ("pidfile", "the pid file is state.pid"):
        "--pid-file receives lxc-execute's PID (the process a subreaper can wait for, "
        "docs/cli.md), state.pid the container init's; runc writes the program's PID to both; "
        "issue 13 item 1",
}
