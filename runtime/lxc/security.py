"""The process's security settings: capabilities, rlimits, user and groups, no_new_privs,
oom_score_adj, AppArmor and SELinux (config.md "Linux process", DESIGN.md section 8).

The process settings go to the project's in-container init (:func:`process_directives`,
``runtime/lxc/init/lxcri-init.c``), which applies them in runc's order right before it
execve()s the program, so all five capability sets are honoured exactly. Done by LXC
(``lxc.cap.keep``, ``lxc.init.uid``, ``lxc.prlimit``, ``lxc.no_new_privs``, measured on LXC
5.0.2) a non-root process lost its effective and permitted sets, the inheritable and ambient
sets were never set, and the settings confined LXC's own last steps too.
AppArmor and SELinux stay LXC's keys: LXC sets the label for the exec of the init, and the
label carries over the init's execve of the program. Pure: the host facts (is AppArmor/SELinux
enabled) come in as arguments.
"""

from __future__ import annotations

from typing import Any

from runtime.errdefs import InvalidArgument

Line = tuple[str, str]

#: The profile a container without ``process.apparmorProfile`` gets on an AppArmor host: LXC
#: generates a per-container profile derived from its default and loads it (``man
#: lxc.container.conf``, lxc.apparmor.profile: "generated"). Never "unconfined" by default.
DEFAULT_APPARMOR_PROFILE = "generated"
#: The default for containers CRIU may dump: LXC 5 hands CRIU the literal "generated" as the
#: profile to restore into, which does not exist ("can't write lsm profile -2", then a CRIU
#: BUG, measured in the kernel test host); LXC's own fixed default profile, shipped in
#: /etc/apparmor.d/lxc/lxc-default-cgns, has a name that survives the restore.
CRIU_APPARMOR_PROFILE = "lxc-container-default-cgns"
_U64_MAX = 2**64 - 1


#: Linux capability numbers (include/uapi/linux/capability.h), by the OCI name.
CAPABILITIES = {f"CAP_{name}": nr for nr, name in enumerate((
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE",
    "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
    "PERFMON", "BPF", "CHECKPOINT_RESTORE"))}
#: RLIMIT_* numbers (include/uapi/asm-generic/resource.h, the same on x86 and arm).
RLIMITS = {f"RLIMIT_{name}": nr for nr, name in enumerate((
    "CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS", "LOCKS",
    "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME"))}
_CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")
# mount(2) flags (include/uapi/linux/mount.h).
_MS_REC, _MS_UNBINDABLE, _MS_PRIVATE = 0x4000, 1 << 17, 1 << 18
_MS_SLAVE, _MS_SHARED = 1 << 19, 1 << 20
#: linux.rootfsPropagation → mount(2) flags for "/" (config-linux.md "rootfsPropagation").
PROPAGATION = {"shared": _MS_SHARED, "slave": _MS_SLAVE, "private": _MS_PRIVATE,
               "unbindable": _MS_UNBINDABLE, "rshared": _MS_SHARED | _MS_REC,
               "rslave": _MS_SLAVE | _MS_REC, "rprivate": _MS_PRIVATE | _MS_REC,
               "runbindable": _MS_UNBINDABLE | _MS_REC}


def propagation_directive(spec: dict[str, Any]) -> str:
    """The init's ``propagation`` line for ``linux.rootfsPropagation`` (the container's
    process only; "" without one). The init sets it after LXC's pivot_root."""
    value = (spec.get("linux") or {}).get("rootfsPropagation")
    if not value:
        return ""
    if value not in PROPAGATION:
        raise InvalidArgument(f"linux.rootfsPropagation: {value!r} is not one of "
                              f"{', '.join(PROPAGATION)}")
    return f"propagation {PROPAGATION[value]}\n"


def process_directives(process: dict[str, Any], notes: list[str], *,
                       seccomp_flags: int | None = None) -> str:
    """The in-container init's ``process`` file (runtime/lxc/init/lxcri-init.c): user and
    groups, rlimits, the five capability sets, no_new_privs and whether to load the seccomp
    filter, which the init applies in runc's order right before ``execve``. LXC is given none
    of these: it would apply them before its own last steps and the init, and it clears the
    effective and permitted sets of a non-root user and never sets the inheritable and
    ambient ones (measured, issue 13)."""
    user = process.get("user") or {}
    groups = " ".join(str(int(g)) for g in user.get("additionalGids") or [])
    lines = [f"uid {int(user.get('uid', 0))}", f"gid {int(user.get('gid', 0))}",
             f"groups {groups}".rstrip()]
    for i, r in enumerate(process.get("rlimits") or []):
        field = f"process.rlimits[{i}]"
        if not isinstance(r, dict) or r.get("type") not in RLIMITS:
            raise InvalidArgument(f"{field}.type: unknown rlimit type {r.get('type')!r}"
                                  if isinstance(r, dict) else f"{field}: must be an object")
        soft, hard = r.get("soft"), r.get("hard")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _U64_MAX
                   for v in (soft, hard)):
            raise InvalidArgument(f"{field}: soft and hard must be unsigned 64-bit integers")
        # The OCI name last, for the init's messages (it is one of RLIMITS: no space).
        lines.append(f"rlimit {RLIMITS[r['type']]} {soft} {hard} {r['type']}")
    caps = process.get("capabilities")
    if caps is not None:
        # No capabilities object: nothing is changed (runc too); a root process keeps all.
        masks: list[int] = []
        for name in _CAP_SETS:
            mask = 0
            for cap in caps.get(name) or []:
                if cap in CAPABILITIES:
                    mask |= 1 << CAPABILITIES[cap]
                else:  # runc ignores capabilities it does not know, with a warning
                    notes.append(f"process.capabilities.{name}: unknown capability {cap!r} "
                                 "ignored")
            masks.append(mask)
        # The kernel raises an ambient capability only if it is permitted and inheritable
        # (PR_CAP_AMBIENT_RAISE, capabilities(7)); runc warns and goes on without it
        # (measured with runc 1.1.5: the program runs with CapAmb 0), so the init is not
        # asked for what would fail.
        ambient = masks[4] & masks[2] & masks[3]
        dropped = [n for n, b in CAPABILITIES.items() if masks[4] & ~ambient & (1 << b)]
        if dropped:
            notes.append(f"process.capabilities.ambient: {', '.join(dropped)} not raised "
                         "(an ambient capability must be permitted and inheritable too)")
        masks[4] = ambient
        lines.append("caps " + " ".join(format(m, "x") for m in masks))
    if process.get("noNewPrivileges"):
        lines.append("nnp")
    if process.get("cwd"):
        lines.append(f"cwd {process['cwd']}")
    if seccomp_flags is not None:
        lines.append(f"seccomp {seccomp_flags}")
    return "".join(f"{line}\n" for line in lines)


def configure_capabilities(process: dict[str, Any], notes: list[str]) -> list[Line]:
    """The bounding set as ``lxc.cap.keep`` (``none`` for an empty set), with a note for what
    LXC then gives the other sets. Not the LXC backend's (its init applies all five sets):
    the Proxmox backend's CTs, whose init is Proxmox's start, use it (runtime.proxmox)."""
    caps = process.get("capabilities")
    if caps is None:
        # No capabilities object: LXC keeps every capability (what runc does for a nil set).
        notes.append("process.capabilities: absent, the container keeps all capabilities")
        return []
    bounding = list(caps.get("bounding") or [])
    keep = " ".join(c.removeprefix("CAP_").lower() for c in bounding) or "none"
    uid = (process.get("user") or {}).get("uid", 0)
    for name in ("effective", "permitted"):
        asked = set(caps.get(name) or [])
        got = set(bounding) if uid == 0 else set()
        if asked != got:
            notes.append(f"process.capabilities.{name}: LXC gives "
                         f"{'the bounding set' if uid == 0 else 'none to a non-root user'}, "
                         "not the set asked")
    for name in ("inheritable", "ambient"):
        if caps.get(name):
            notes.append(f"process.capabilities.{name}: not applied (LXC leaves it empty)")
    return [("lxc.cap.keep", keep)]


def configure_privileges(process: dict[str, Any]) -> list[Line]:
    """``oomScoreAdj``; the other privileges are the init's (:func:`process_directives`)."""
    if process.get("oomScoreAdj") is not None:
        return [("lxc.proc.oom_score_adj", str(process["oomScoreAdj"]))]
    return []


def configure_lsm(spec: dict[str, Any], apparmor: bool, selinux: bool,
                  notes: list[str], default: str = DEFAULT_APPARMOR_PROFILE) -> list[Line]:
    """AppArmor profile and SELinux label. Both keys are always rendered (LXC's "nop" LSM
    driver ignores them on hosts without the LSM: environment.md section 2), and a note says
    when the host cannot enforce them."""
    process = spec["process"]
    profile = process.get("apparmorProfile") or default
    lines: list[Line] = [("lxc.apparmor.profile", profile)]
    if not apparmor and profile != "unconfined":
        notes.append(f"process.apparmorProfile: {profile!r} not enforced (AppArmor is not "
                     "enabled on this host)")
    label = process.get("selinuxLabel")
    if label:
        lines.append(("lxc.selinux.context", label))
        if not selinux:
            notes.append("process.selinuxLabel: rendered but not enforced (SELinux is not "
                         "enabled on this host)")
    if (spec.get("linux") or {}).get("mountLabel"):
        notes.append("linux.mountLabel: not applied (LXC has no mount-label key)")
    return lines
