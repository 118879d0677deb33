"""``linux.seccomp`` (config-linux.md "Seccomp") → a compiled BPF filter for the container's
init (``runtime/lxc/init/lxcri-init.c``), which loads it as its last step before ``execve``.

Why not LXC's ``lxc.seccomp.profile``: LXC loads the filter in its own child before its last
set-up steps and before the init, so the filter confined LXC and the init too; with an
allowlist that lacks ``close_range`` LXC's init aborted and the program never ran (issue 13).
runc loads it in ``runc init`` right before ``execve`` (after the capabilities when
``noNewPrivileges`` is set, before them otherwise, since loading needs CAP_SYS_ADMIN without
no_new_privs); the init does the same.

Two steps, as runc's ``libcontainer/seccomp/seccomp_linux.go``:

- :func:`plan` (pure): the spec's actions, conditions, architectures and flags checked and
  turned into numbers. Rules whose action equals the default action are dropped, with or
  without argument conditions (libseccomp refuses such a rule: "Failed to add rule for
  syscall personality", issue 13; runc drops them). :func:`describe` renders a plan as text
  for the golden tests.
- :func:`compile_bpf`: libseccomp (the host's ``libseccomp.so.2``, through ctypes) builds the
  filter and exports it as BPF (``seccomp_export_bpf(3)``). A syscall name libseccomp does not
  know is skipped, as runc does (profiles name syscalls of newer kernels).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
from dataclasses import dataclass
from typing import Any

from runtime.errdefs import InvalidArgument, NotImplementedErr

#: What a syscall name looks like; anything else is refused (it never reaches libseccomp).
_SYSCALL = re.compile(r"[a-z0-9_]+")

# libseccomp's action values (seccomp.h.in; the kernel's SECCOMP_RET_* in
# include/uapi/linux/seccomp.h).
ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_ERRNO = 0x00050000
ACT_TRACE = 0x7FF00000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000

_SIMPLE_ACTIONS = {
    "SCMP_ACT_KILL": ACT_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": ACT_KILL_PROCESS,
    "SCMP_ACT_TRAP": ACT_TRAP,
    "SCMP_ACT_LOG": ACT_LOG,
    "SCMP_ACT_ALLOW": ACT_ALLOW,
}
#: enum scmp_compare (seccomp.h.in).
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
        "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
#: seccomp(2) SECCOMP_SET_MODE_FILTER flags the init passes on (include/uapi/linux/seccomp.h).
#: TSYNC is meaningless for the single-threaded init; WAIT_KILLABLE_RECV needs a listener.
_FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 0, "SECCOMP_FILTER_FLAG_LOG": 2,
          "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4}
_EPERM = errno.EPERM


@dataclass(frozen=True)
class Condition:
    index: int
    op: int
    value: int
    value_two: int


@dataclass(frozen=True)
class Rule:
    names: tuple[str, ...]
    action: int
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Filter:
    default: int
    #: libseccomp architecture names ("x86_64", "x86", "x32", …); the native one is implied.
    architectures: tuple[str, ...]
    flags: int
    rules: tuple[Rule, ...]


def plan(seccomp: dict[str, Any], notes: list[str]) -> Filter:
    """Check ``linux.seccomp`` and turn it into numbers; downgrades are appended to
    ``notes``."""
    for key in ("listenerPath", "listenerMetadata"):
        if seccomp.get(key):
            raise NotImplementedErr(f"linux.seccomp.{key}: seccomp user notification is not "
                                    "supported")
    flags = 0
    for i, name in enumerate(seccomp.get("flags") or []):
        if name not in _FLAGS:
            raise InvalidArgument(f"linux.seccomp.flags[{i}]: unknown or unsupported flag "
                                  f"{name!r}")
        flags |= _FLAGS[name]
    arches = []
    for i, name in enumerate(seccomp.get("architectures") or []):
        if not isinstance(name, str) or not name.startswith("SCMP_ARCH_"):
            raise InvalidArgument(f"linux.seccomp.architectures[{i}]: not an SCMP_ARCH_ name")
        arches.append(name.removeprefix("SCMP_ARCH_").lower())
    default = _action(seccomp.get("defaultAction"), seccomp.get("defaultErrnoRet"),
                      "linux.seccomp.defaultAction")
    rules = []
    for i, rule in enumerate(seccomp.get("syscalls") or []):
        field = f"linux.seccomp.syscalls[{i}]"
        action = _action(rule.get("action"), rule.get("errnoRet"), f"{field}.action")
        if action == default:
            # runc drops these (with or without conditions): libseccomp refuses a rule whose
            # action is the filter's default.
            continue
        conditions = tuple(_condition(a, f"{field}.args[{k}]")
                           for k, a in enumerate(rule.get("args") or []))
        names = rule.get("names") or []
        if not isinstance(names, list):
            raise InvalidArgument(f"{field}.names: must be a list of syscall names")
        for j, name in enumerate(names):
            if not isinstance(name, str) or not _SYSCALL.fullmatch(name):
                raise InvalidArgument(f"{field}.names[{j}]: must be a syscall name")
        rules.append(Rule(tuple(names), action, conditions))
    return Filter(default, tuple(arches), flags, tuple(rules))


def _action(name: Any, errno_ret: Any, field: str) -> int:
    if name == "SCMP_ACT_NOTIFY":
        raise NotImplementedErr(f"{field}: SCMP_ACT_NOTIFY is not supported")
    if errno_ret is not None and (not isinstance(errno_ret, int) or not 0 <= errno_ret < 65536):
        raise InvalidArgument(f"{field}: errnoRet must be an integer from 0 to 65535")
    if name == "SCMP_ACT_ERRNO":
        return ACT_ERRNO | (errno_ret if errno_ret is not None else _EPERM)
    if name == "SCMP_ACT_TRACE":
        return ACT_TRACE | (errno_ret if errno_ret is not None else _EPERM)
    if name not in _SIMPLE_ACTIONS:
        raise InvalidArgument(f"{field}: unknown action {name!r}")
    return _SIMPLE_ACTIONS[name]


def _condition(arg: Any, field: str) -> Condition:
    if not isinstance(arg, dict):
        raise InvalidArgument(f"{field}: must be an object")
    index, op = arg.get("index"), arg.get("op")
    if not isinstance(index, int) or not 0 <= index < 6:
        raise InvalidArgument(f"{field}.index: must be 0 to 5")
    if op not in _OPS:
        raise InvalidArgument(f"{field}.op: unknown operator {op!r}")
    values = (arg.get("value", 0), arg.get("valueTwo", 0))
    if not all(isinstance(v, int) and 0 <= v < 2**64 for v in values):
        raise InvalidArgument(f"{field}: value and valueTwo must be unsigned 64-bit integers")
    return Condition(index, _OPS[op], *values)


def describe(f: Filter) -> str:
    """The plan as text (golden tests, logs)."""
    ops = {v: k.removeprefix("SCMP_CMP_") for k, v in _OPS.items()}
    lines = [f"default {_action_text(f.default)}", f"flags {f.flags}"]
    if f.architectures:
        lines.append("architectures " + " ".join(f.architectures))
    for r in f.rules:
        conds = "".join(f" [{c.index} {ops[c.op]} {c.value} {c.value_two}]"
                        for c in r.conditions)
        lines.append(f"{','.join(r.names)} {_action_text(r.action)}{conds}")
    return "\n".join(lines) + "\n"


def _action_text(action: int) -> str:
    names = {ACT_KILL_PROCESS: "kill_process", ACT_KILL_THREAD: "kill_thread",
             ACT_TRAP: "trap", ACT_LOG: "log", ACT_ALLOW: "allow"}
    if action in names:
        return names[action]
    base, data = action & 0xFFFF0000, action & 0xFFFF
    return f"{'errno' if base == ACT_ERRNO else 'trace'} {data}"


# --- compiling (libseccomp) ----------------------------------------------------------------


class _ArgCmp(ctypes.Structure):
    # struct scmp_arg_cmp (seccomp.h.in): unsigned int arg; enum scmp_compare op;
    # scmp_datum_t datum_a, datum_b (uint64_t).
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


@functools.cache
def _lib() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as exc:
        raise NotImplementedErr(f"linux.seccomp: libseccomp.so.2 is not installed ({exc}); "
                                "install Debian's libseccomp2") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


_NR_SCMP_ERROR = -1


def compile_bpf(f: Filter) -> bytes:
    """The filter as a BPF program (an array of ``struct sock_filter``)."""
    lib = _lib()
    ctx = lib.seccomp_init(f.default)
    if not ctx:
        raise InvalidArgument("linux.seccomp.defaultAction: libseccomp refused it")
    try:
        for name in f.architectures:
            token = lib.seccomp_arch_resolve_name(name.encode())
            if token == 0:
                raise InvalidArgument(f"linux.seccomp.architectures: unknown architecture "
                                      f"{name!r}")
            rc = lib.seccomp_arch_add(ctx, token)
            if rc not in (0, -errno.EEXIST):  # the native one is already in
                raise InvalidArgument(f"linux.seccomp.architectures: {name}: "
                                      f"{os.strerror(-rc)}")
        for rule in f.rules:
            for name in rule.names:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == _NR_SCMP_ERROR:
                    continue  # unknown to this libseccomp: runc skips it too
                for conds in _condition_groups(rule.conditions):
                    array = (_ArgCmp * max(len(conds), 1))(
                        *[_ArgCmp(c.index, c.op, c.value, c.value_two) for c in conds])
                    rc = lib.seccomp_rule_add_array(ctx, rule.action, nr, len(conds), array)
                    if rc != 0:
                        raise InvalidArgument(f"linux.seccomp: rule for {name}: libseccomp "
                                              f"refused it ({os.strerror(-rc)})")
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc != 0:
                raise InvalidArgument(f"linux.seccomp: exporting the filter failed "
                                      f"({os.strerror(-rc)})")
            size = os.lseek(fd, 0, os.SEEK_CUR)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def _condition_groups(conds: tuple[Condition, ...]) -> list[tuple[Condition, ...]]:
    """libseccomp takes at most one condition per argument in a rule; runc turns a rule that
    repeats an argument index into one rule per condition (seccomp_linux.go, matchCall)."""
    indexes = [c.index for c in conds]
    if len(set(indexes)) == len(indexes):
        return [conds]
    return [(c,) for c in conds]
