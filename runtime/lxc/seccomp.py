"""``linux.seccomp`` (config-linux.md "Seccomp") → an LXC seccomp policy, version 2.

The format (``man lxc.container.conf``, SECCOMP CONFIGURATION; LXC 5 ``seccomp.c``):

    2
    allowlist errno 1        <- policy type, then the default action for unlisted syscalls
    [all]                    <- rules apply to the native and the compat architectures
    read allow               <- "<syscall> <action> [<arg>]…"
    personality allow [0,8,SCMP_CMP_EQ]

An argument condition is ``[index,value,op]`` or, for SCMP_CMP_MASKED_EQ, ``[index,value,op,
mask]``; LXC hands (mask, value) to libseccomp in that order, which is OCI's (value,
valueTwo). Pure: :func:`render` returns the text; the backend writes it to a file named by
``lxc.seccomp.profile``.
"""

from __future__ import annotations

import re
from typing import Any

from runtime.errdefs import InvalidArgument, NotImplementedErr

_SYSCALL = re.compile(r"[a-z0-9_]+")

#: OCI action → LXC action word; an ERRNO action appends its errno (EPERM unless given).
_ACTIONS = {
    "SCMP_ACT_ALLOW": "allow",
    "SCMP_ACT_ERRNO": "errno",
    "SCMP_ACT_KILL": "kill",
    "SCMP_ACT_KILL_THREAD": "kill",
    "SCMP_ACT_TRAP": "trap",
    "SCMP_ACT_TRACE": "trace",
    "SCMP_ACT_LOG": "log",
}
_EPERM = 1


def render(seccomp: dict[str, Any], notes: list[str]) -> str:
    """The policy text for ``seccomp``; downgrades are appended to ``notes``."""
    for key in ("listenerPath", "listenerMetadata"):
        if seccomp.get(key):
            raise NotImplementedErr(f"linux.seccomp.{key}: seccomp user notification is not "
                                    "supported")
    if seccomp.get("flags"):
        notes.append("linux.seccomp.flags: not applied (LXC sets the filter flags itself)")
    if seccomp.get("architectures"):
        notes.append("linux.seccomp.architectures: not applied as a list; LXC filters the "
                     "native architecture and its compat ones ([all])")
    default = _action(seccomp["defaultAction"], seccomp.get("defaultErrnoRet"),
                      "linux.seccomp.defaultAction", notes)
    lines = ["2", f"allowlist {default}" if default != "allow" else "denylist", "[all]"]
    for i, rule in enumerate(seccomp.get("syscalls") or []):
        action = _action(rule["action"], rule.get("errnoRet"),
                         f"linux.seccomp.syscalls[{i}].action", notes)
        if action == default and not rule.get("args"):
            continue  # the default already does this; LXC would add a redundant rule
        conditions = "".join(_condition(a) for a in rule.get("args") or [])
        for j, name in enumerate(rule["names"]):
            if not isinstance(name, str) or not _SYSCALL.fullmatch(name):
                # One policy line per name: a name is never more than a syscall name.
                raise InvalidArgument(f"linux.seccomp.syscalls[{i}].names[{j}]: must be a "
                                      "syscall name")
            lines.append(f"{name} {action}" + (f" {conditions}" if conditions else ""))
    return "\n".join(lines) + "\n"


def _action(name: str, errno_ret: int | None, field: str, notes: list[str]) -> str:
    if name == "SCMP_ACT_NOTIFY":
        raise NotImplementedErr(f"{field}: SCMP_ACT_NOTIFY is not supported")
    if name == "SCMP_ACT_KILL_PROCESS":
        # LXC 5's policy language has no kill-process action: the thread is killed instead.
        notes.append(f"{field}: SCMP_ACT_KILL_PROCESS downgraded to kill (thread)")
        return "kill"
    word = _ACTIONS[name]
    if word == "errno":
        return f"errno {errno_ret if errno_ret is not None else _EPERM}"
    if word == "trace":
        return f"trace {errno_ret or 0}"
    return word


def _condition(arg: dict[str, Any]) -> str:
    index, value, op = arg["index"], arg["value"], arg["op"]
    if op == "SCMP_CMP_MASKED_EQ":
        return f"[{index},{arg.get('valueTwo', 0)},{op},{value}]"
    return f"[{index},{value},{op}]"
