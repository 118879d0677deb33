"""The process's security settings → LXC keys: capabilities, rlimits, no_new_privs,
oom_score_adj, AppArmor and SELinux (config.md "Linux process", DESIGN.md section 8).

What LXC can and cannot express was measured on this host (LXC 5.0.2, lxc-execute):

- ``lxc.cap.keep`` sets the **bounding** set: LXC drops every other capability with
  PR_CAPBSET_DROP (``man lxc.container.conf``, lxc.cap.keep). ``lxc.cap.keep = none`` drops all.
- A **root** process (uid 0) then has permitted = effective = the bounding set, inheritable and
  ambient empty (``/proc/self/status`` read in the container: CapPrm = CapEff = CapBnd).
- A **non-root** process (``lxc.init.uid`` ≠ 0) has permitted, effective, inheritable and
  ambient all empty: LXC switches uid without keeping capabilities.

So the bounding set is honoured exactly; the other four sets are honoured when they equal what
LXC produces and otherwise downgraded with a note (logged by the backend as a warning).
Pure: the host facts (is AppArmor/SELinux enabled) come in as arguments.
"""

from __future__ import annotations

from typing import Any

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


def configure_capabilities(process: dict[str, Any], notes: list[str]) -> list[Line]:
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


def configure_rlimits(process: dict[str, Any]) -> list[Line]:
    """``lxc.prlimit.<resource> = soft:hard`` (``man lxc.container.conf``, lxc.prlimit)."""
    lines: list[Line] = []
    for r in process.get("rlimits") or []:
        name = r["type"].removeprefix("RLIMIT_").lower()
        lines.append((f"lxc.prlimit.{name}", f"{_limit(r['soft'])}:{_limit(r['hard'])}"))
    return lines


def _limit(value: int) -> str:
    return "unlimited" if value >= _U64_MAX else str(value)


def configure_privileges(process: dict[str, Any]) -> list[Line]:
    lines: list[Line] = []
    if process.get("noNewPrivileges"):
        lines.append(("lxc.no_new_privs", "1"))  # prctl(PR_SET_NO_NEW_PRIVS) before exec
    if process.get("oomScoreAdj") is not None:
        lines.append(("lxc.proc.oom_score_adj", str(process["oomScoreAdj"])))
    return lines


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
