"""Loading and validating a bundle's ``config.json`` against the OCI runtime specification.

:func:`check_spec` runs before anything is created (runtime.md "Lifecycle" step 1: "the runtime
MUST generate an error if it does not find the required data") and checks what config.md says
about required fields, types, value ranges and paths. Every error is an
:class:`~runtime.errdefs.InvalidArgument` whose message starts with the field path
(``process.args: must be a non-empty list``), so the ttrpc error, the CLI and the logs all name
the field. Whether a *valid* setting can be honoured on LXC is the translation's business
(:mod:`runtime.lxc.config`), not this module's.

Pure apart from reading the file in :func:`load_spec`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.errdefs import InvalidArgument, NotFound

_U32 = 2**32 - 1
_U64 = 2**64 - 1
_I64 = 2**63 - 1
# Matched with fullmatch: "$" would also match before a trailing newline.
_SEMVER = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
_ENV_KEY = re.compile(r"[^=\0]+")
_SYSCTL = re.compile(r"[a-z0-9_]+(?:[./][A-Za-z0-9_-]+)+")
_CPU_LIST = re.compile(r"[0-9]+(?:-[0-9]+)?(?:,[0-9]+(?:-[0-9]+)?)*")
_SYSCALL = re.compile(r"[a-z0-9_]+")
#: A ``linux.resources.unified`` key: a file of a cgroup v2 controller (cgroup-v2.rst
#: "Controllers"), never a path ("/") nor a core ``cgroup.*`` file; runc refuses slashes too.
_UNIFIED_KEY = re.compile(r"(?:cpu|cpuset|hugetlb|io|memory|misc|pids|rdma)(?:\.[A-Za-z0-9_]+)+")
#: A map key shown as ``parent.key`` in a field path; any other shows as ``parent["…"]``.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-/]+")
#: What ends an LXC config line (\r and \n) or the file (NUL): no string that reaches the
#: container's config may hold one (issue 12; runtime.lxc.config.render).
_LINE_BREAKS = ("\r", "\n", "\0")

#: config.md "POSIX platform Hooks" (prestart is deprecated but still defined).
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
#: getrlimit(2) resources (config.md "POSIX process": "the runtime MUST generate an error for
#: any values which cannot be mapped to a relevant kernel interface").
RLIMITS = ("RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE",
           "RLIMIT_LOCKS", "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE",
           "RLIMIT_NPROC", "RLIMIT_RSS", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING",
           "RLIMIT_STACK")
#: capabilities(7) as of Linux 6.x.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE")
CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
#: config-linux.md "Seccomp".
SECCOMP_ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                   "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW",
                   "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY")
SECCOMP_OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
               "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
SECCOMP_ARCHES = ("SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM",
                  "SCMP_ARCH_AARCH64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64",
                  "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
                  "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
                  "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC",
                  "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64")
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable",
                "runbindable")


def load_spec(bundle: Path) -> dict[str, Any]:
    """``<bundle>/config.json``, parsed and validated (:func:`check_spec`)."""
    path = bundle / "config.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{path}: bundle has no config.json") from None
    try:
        spec = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"config.json: not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidArgument("config.json: nested too deeply") from None
    check_spec(spec)
    return spec  # type: ignore[no-any-return]


def check_spec(spec: Any) -> None:
    """Raise InvalidArgument naming the first field of ``spec`` that breaks config.md."""
    if not isinstance(spec, dict):
        raise InvalidArgument("config.json: must be a JSON object")
    version = spec.get("ociVersion")
    if not isinstance(version, str) or not _SEMVER.fullmatch(version):
        raise InvalidArgument("ociVersion: must be a SemVer 2.0.0 string such as 1.0.2")
    if not version.startswith("1."):
        raise InvalidArgument(f"ociVersion: {version} is not supported (1.x only)")
    _check_unicode(spec, "")
    root = _obj(spec, "root", "root", required=True)
    assert root is not None
    _str(root, "path", "root.path", required=True, nonempty=True)
    _bool(root, "readonly", "root.readonly")
    _check_process(_obj(spec, "process", "process", required=True))
    for key in ("hostname", "domainname"):
        _str(spec, key, key)
    _check_mounts(spec.get("mounts", []))
    _check_hooks(spec.get("hooks", {}))
    _check_annotations(spec.get("annotations", {}))
    linux = _obj(spec, "linux", "linux")
    if linux is not None:
        _check_linux(linux)


# --- small typed accessors: each raises with the field path --------------------------------


def _fail(field: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {problem}")


def _member(field: str, key: str) -> str:
    """The field path of map member ``key``; a hostile key is shown JSON-escaped, never raw
    (the message goes to logs and terminals)."""
    return f"{field}.{key}" if _PLAIN_KEY.fullmatch(key) else f"{field}[{json.dumps(key)}]"


def _text(value: str, field: str) -> str:
    """``value`` if it can be one line of LXC config text, else the error naming ``field``."""
    if any(c in value for c in _LINE_BREAKS):
        raise _fail(field, "must not contain a line break (\\r or \\n) or NUL")
    return value


def _check_unicode(spec: Any, field: str) -> None:
    """Every string (keys too) must be encodable: JSON lets a lone surrogate (\\ud800)
    through, which no file, argv or log line can hold. A walk with a stack, not recursion: a
    deeply nested document must give this error or none, never a RecursionError."""
    if not _has_bad_string(spec):
        return
    _name_bad_string(spec, field)


def _has_bad_string(spec: Any) -> bool:
    """Whether some string of ``spec`` cannot be encoded: the walk of every create, without
    the field paths (building them for every value took most of check_spec's time)."""
    todo: list[Any] = [spec]
    while todo:
        value = todo.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(value, dict):
            todo += value
            todo += value.values()
        elif isinstance(value, list):
            todo += value
    return False


def _name_bad_string(spec: Any, field: str) -> None:
    """Raise the error naming the first string (in this walk's order) that cannot be
    encoded."""
    todo: list[tuple[Any, str]] = [(spec, field)]
    while todo:
        value, where = todo.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _fail(where or "config.json", "must be valid Unicode (a lone surrogate "
                                                    "is not)") from None
        elif isinstance(value, dict):
            for key, item in value.items():
                todo.append((key, f"{where or 'config.json'} (a key)"))
                todo.append((item, _member(where, key) if where else key))
        elif isinstance(value, list):
            todo += [(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _obj(parent: dict[str, Any], key: str, field: str, *,
         required: bool = False) -> dict[str, Any] | None:
    value = parent.get(key)
    if value is None:
        if required:
            raise _fail(field, "is required")
        return None
    if not isinstance(value, dict):
        raise _fail(field, "must be an object")
    return value


def _str(parent: dict[str, Any], key: str, field: str, *, required: bool = False,
         nonempty: bool = False) -> str | None:
    value = parent.get(key)
    if value is None:
        if required:
            raise _fail(field, "is required")
        return None
    if not isinstance(value, str):
        raise _fail(field, "must be a string")
    if nonempty and not value:
        raise _fail(field, "must not be empty")
    return _text(value, field)


def _bool(parent: dict[str, Any], key: str, field: str) -> None:
    if key in parent and not isinstance(parent[key], bool):
        raise _fail(field, "must be a boolean")


def _int(parent: dict[str, Any], key: str, field: str, lo: int, hi: int, *,
         required: bool = False) -> int | None:
    value = parent.get(key)
    if value is None:
        if required:
            raise _fail(field, "is required")
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(field, "must be an integer")
    if not lo <= value <= hi:
        raise _fail(field, f"must be between {lo} and {hi}")
    return value


def _list(parent: dict[str, Any], key: str, field: str) -> list[Any]:
    value = parent.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(field, "must be a list")
    return value


def _abs_path(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise _fail(field, "must be an absolute path")
    _text(value, field)
    if ".." in value.split("/"):
        raise _fail(field, "must not contain '..'")
    return value


def _env(values: list[Any], field: str) -> None:
    for i, item in enumerate(values):
        if not isinstance(item, str) or "=" not in item:
            raise _fail(f"{field}[{i}]", "must be a KEY=VALUE string")
        if not _ENV_KEY.fullmatch(item.split("=", 1)[0]):
            raise _fail(f"{field}[{i}]", "must be KEY=VALUE with a non-empty KEY")
        _text(item, f"{field}[{i}]")


def _strings(values: list[Any], field: str, *, text: bool = False) -> None:
    """A list of strings; ``text``: each one also a piece of LXC config text."""
    for i, item in enumerate(values):
        if not isinstance(item, str) or "\0" in item:
            raise _fail(f"{field}[{i}]", "must be a string without NUL")
        if text:
            _text(item, f"{field}[{i}]")


def _each(values: list[Any], field: str, check: Callable[[dict[str, Any], str], None]) -> None:
    for i, item in enumerate(values):
        if not isinstance(item, dict):
            raise _fail(f"{field}[{i}]", "must be an object")
        check(item, f"{field}[{i}]")


# --- process (config.md "Process", "POSIX process", "Linux process") -----------------------


def _check_process(p: dict[str, Any] | None) -> None:
    assert p is not None
    _bool(p, "terminal", "process.terminal")
    size = _obj(p, "consoleSize", "process.consoleSize")
    if size is not None:
        for key in ("height", "width"):
            _int(size, key, f"process.consoleSize.{key}", 0, _U32, required=True)
    cwd = p.get("cwd")
    if cwd is None:
        raise _fail("process.cwd", "is required")
    _abs_path(cwd, "process.cwd")
    _env(_list(p, "env", "process.env"), "process.env")
    args = p.get("args")
    if not isinstance(args, list) or not args:
        raise _fail("process.args", "must be a non-empty list")
    _strings(args, "process.args")
    if not args[0]:
        raise _fail("process.args[0]", "must not be empty")
    if "commandLine" in p:
        raise _fail("process.commandLine", "is Windows-only; use process.args")
    _check_user(_obj(p, "user", "process.user", required=True))
    caps = _obj(p, "capabilities", "process.capabilities")
    if caps is not None:
        _check_capabilities(caps)
    _check_rlimits(_list(p, "rlimits", "process.rlimits"))
    _bool(p, "noNewPrivileges", "process.noNewPrivileges")
    _str(p, "apparmorProfile", "process.apparmorProfile")
    _str(p, "selinuxLabel", "process.selinuxLabel")
    _int(p, "oomScoreAdj", "process.oomScoreAdj", -1000, 1000)


def _check_user(user: dict[str, Any] | None) -> None:
    assert user is not None
    for key in ("uid", "gid"):
        _int(user, key, f"process.user.{key}", 0, _U32, required=True)
    _int(user, "umask", "process.user.umask", 0, 0o777)
    for i, gid in enumerate(_list(user, "additionalGids", "process.user.additionalGids")):
        if not isinstance(gid, int) or isinstance(gid, bool) or not 0 <= gid <= _U32:
            raise _fail(f"process.user.additionalGids[{i}]", "must be an integer between 0 and "
                                                             f"{_U32}")


def _check_capabilities(caps: dict[str, Any]) -> None:
    for key in caps:
        if key not in CAPABILITY_SETS:
            raise _fail(_member("process.capabilities", key),
                        f"unknown set (one of {', '.join(CAPABILITY_SETS)})")
    for key in CAPABILITY_SETS:
        field = f"process.capabilities.{key}"
        for i, cap in enumerate(_list(caps, key, field)):
            if cap not in CAPABILITIES:
                raise _fail(f"{field}[{i}]", f"unknown capability {cap!r}")


def _check_rlimits(rlimits: list[Any]) -> None:
    seen: set[str] = set()

    def one(r: dict[str, Any], field: str) -> None:
        kind = r.get("type")
        if kind not in RLIMITS:
            raise _fail(f"{field}.type", f"unknown resource {kind!r}")
        if kind in seen:
            raise _fail(f"{field}.type", f"duplicate rlimit {kind}")
        seen.add(kind)
        soft = _int(r, "soft", f"{field}.soft", 0, _U64, required=True)
        hard = _int(r, "hard", f"{field}.hard", 0, _U64, required=True)
        assert soft is not None and hard is not None
        if soft > hard:
            raise _fail(f"{field}.soft", "must not exceed hard")

    _each(rlimits, "process.rlimits", one)


# --- mounts, hooks, annotations ------------------------------------------------------------


def _check_mounts(mounts: Any) -> None:
    if not isinstance(mounts, list):
        raise _fail("mounts", "must be a list")

    def one(m: dict[str, Any], field: str) -> None:
        _abs_path(m.get("destination"), f"{field}.destination")
        _str(m, "type", f"{field}.type")
        _str(m, "source", f"{field}.source")
        _strings(_list(m, "options", f"{field}.options"), f"{field}.options", text=True)
        for key in ("uidMappings", "gidMappings"):
            if m.get(key):
                raise _fail(f"{field}.{key}", "id-mapped mounts are not supported")

    _each(mounts, "mounts", one)


def _check_hooks(hooks: Any) -> None:
    if not isinstance(hooks, dict):
        raise _fail("hooks", "must be an object")
    for kind, entries in hooks.items():
        if kind not in HOOK_KINDS:
            raise _fail(_member("hooks", kind),
                        f"unknown hook kind (one of {', '.join(HOOK_KINDS)})")
        if not isinstance(entries, list):
            raise _fail(f"hooks.{kind}", "must be a list")

        def one(h: dict[str, Any], field: str) -> None:
            _abs_path(h.get("path"), f"{field}.path")
            _strings(_list(h, "args", f"{field}.args"), f"{field}.args")
            _env(_list(h, "env", f"{field}.env"), f"{field}.env")
            _int(h, "timeout", f"{field}.timeout", 1, 2**31 - 1)

        _each(entries, f"hooks.{kind}", one)


def _check_annotations(annotations: Any) -> None:
    if not isinstance(annotations, dict):
        raise _fail("annotations", "must be an object of strings")
    for key, value in annotations.items():
        if not key:
            raise _fail("annotations", "keys must not be empty")
        if not isinstance(value, str):
            raise _fail(_member("annotations", key), "must be a string")


# --- linux (config-linux.md) ---------------------------------------------------------------


def _check_linux(linux: dict[str, Any]) -> None:
    _check_namespaces(_list(linux, "namespaces", "linux.namespaces"))
    for key in ("uidMappings", "gidMappings"):
        _each(_list(linux, key, f"linux.{key}"), f"linux.{key}", _check_idmap)
    _each(_list(linux, "devices", "linux.devices"), "linux.devices", _check_device)
    _str(linux, "cgroupsPath", "linux.cgroupsPath")
    resources = _obj(linux, "resources", "linux.resources")
    if resources is not None:
        _check_resources(resources)
    sysctl = _obj(linux, "sysctl", "linux.sysctl")
    for key, value in (sysctl or {}).items():
        if not _SYSCTL.fullmatch(key) or ".." in key:
            raise _fail(_member("linux.sysctl", key), "is not a sysctl name")
        if not isinstance(value, str):
            raise _fail(_member("linux.sysctl", key), "must be a string")
        _text(value, _member("linux.sysctl", key))
    seccomp = _obj(linux, "seccomp", "linux.seccomp")
    if seccomp is not None:
        _check_seccomp(seccomp)
    prop = linux.get("rootfsPropagation")
    if prop is not None and prop not in PROPAGATIONS:
        raise _fail("linux.rootfsPropagation", f"must be one of {', '.join(PROPAGATIONS)}")
    for key in ("maskedPaths", "readonlyPaths"):
        for i, path in enumerate(_list(linux, key, f"linux.{key}")):
            _abs_path(path, f"linux.{key}[{i}]")
    _str(linux, "mountLabel", "linux.mountLabel")


def _check_namespaces(entries: list[Any]) -> None:
    seen: set[str] = set()

    def one(ns: dict[str, Any], field: str) -> None:
        kind = ns.get("type")
        if kind not in NAMESPACE_TYPES:
            raise _fail(f"{field}.type", f"must be one of {', '.join(NAMESPACE_TYPES)}")
        if kind in seen:
            raise _fail(f"{field}.type", f"duplicate namespace {kind!r}")
        seen.add(kind)
        if ns.get("path") not in (None, ""):
            _abs_path(ns["path"], f"{field}.path")

    _each(entries, "linux.namespaces", one)


def _check_idmap(m: dict[str, Any], field: str) -> None:
    for key in ("containerID", "hostID"):
        _int(m, key, f"{field}.{key}", 0, _U32, required=True)
    _int(m, "size", f"{field}.size", 1, _U32, required=True)


def _check_device(d: dict[str, Any], field: str) -> None:
    kind = d.get("type")
    if kind not in ("c", "b", "u", "p"):
        raise _fail(f"{field}.type", "must be one of c, b, u, p")
    _abs_path(d.get("path"), f"{field}.path")
    for key in ("major", "minor"):
        _int(d, key, f"{field}.{key}", 0, _I64, required=kind != "p")
    _int(d, "fileMode", f"{field}.fileMode", 0, 0o7777)
    for key in ("uid", "gid"):
        _int(d, key, f"{field}.{key}", 0, _U32)


def _check_resources(r: dict[str, Any]) -> None:
    def device_rule(d: dict[str, Any], field: str) -> None:
        if not isinstance(d.get("allow"), bool):
            raise _fail(f"{field}.allow", "is required and must be a boolean")
        if d.get("type", "a") not in ("a", "c", "b"):
            raise _fail(f"{field}.type", "must be one of a, c, b")
        for key in ("major", "minor"):
            _int(d, key, f"{field}.{key}", -1, _I64)
        access = d.get("access", "rwm")
        if not isinstance(access, str) or not access or set(access) - set("rwm"):
            raise _fail(f"{field}.access", "must be a combination of r, w, m")

    _each(_list(r, "devices", "linux.resources.devices"), "linux.resources.devices",
          device_rule)
    mem = _obj(r, "memory", "linux.resources.memory") or {}
    for key in ("limit", "reservation", "swap", "kernel", "kernelTCP"):
        _int(mem, key, f"linux.resources.memory.{key}", -1, _I64)
    _int(mem, "swappiness", "linux.resources.memory.swappiness", 0, 100)
    limit, swap = mem.get("limit"), mem.get("swap")
    if isinstance(limit, int) and isinstance(swap, int) and limit > 0 and 0 < swap < limit:
        raise _fail("linux.resources.memory.swap", "must be at least memory.limit (it is "
                                                  "memory plus swap)")
    cpu = _obj(r, "cpu", "linux.resources.cpu") or {}
    _int(cpu, "shares", "linux.resources.cpu.shares", 2, 262144)
    _int(cpu, "quota", "linux.resources.cpu.quota", -1, _I64)
    _int(cpu, "period", "linux.resources.cpu.period", 1000, 1000000)
    for key in ("cpus", "mems"):
        value = _str(cpu, key, f"linux.resources.cpu.{key}")
        if value and not _CPU_LIST.fullmatch(value):
            raise _fail(f"linux.resources.cpu.{key}", "must be a list such as 0-3,6")
    pids = _obj(r, "pids", "linux.resources.pids") or {}
    _int(pids, "limit", "linux.resources.pids.limit", -1, _I64, required="pids" in r)
    blkio = _obj(r, "blockIO", "linux.resources.blockIO") or {}
    for key in ("weight", "leafWeight"):
        _int(blkio, key, f"linux.resources.blockIO.{key}", 10, 1000)
    _check_unified(_obj(r, "unified", "linux.resources.unified") or {})


def _check_unified(unified: dict[str, Any]) -> None:
    """config-linux.md "Unified": keys are cgroup v2 file names, values written as they are.
    A value may hold several lines (runc writes it line by line), none holding ``\\r``/NUL."""
    for key, value in unified.items():
        field = f"linux.resources.unified[{json.dumps(key)}]"
        if not _UNIFIED_KEY.fullmatch(key):
            raise _fail(field, "must name a cgroup v2 controller file such as memory.high "
                               "(no '/', no cgroup.* core file)")
        if not isinstance(value, str):
            raise _fail(field, "must be a string")
        if not value.strip("\n"):
            raise _fail(field, "must not be empty")
        for line in value.split("\n"):
            _text(line, field)


def _check_seccomp(s: dict[str, Any]) -> None:
    if s.get("defaultAction") not in SECCOMP_ACTIONS:
        raise _fail("linux.seccomp.defaultAction", f"must be one of {', '.join(SECCOMP_ACTIONS)}")
    _int(s, "defaultErrnoRet", "linux.seccomp.defaultErrnoRet", 0, 4095)
    for i, arch in enumerate(_list(s, "architectures", "linux.seccomp.architectures")):
        if arch not in SECCOMP_ARCHES:
            raise _fail(f"linux.seccomp.architectures[{i}]", f"unknown architecture {arch!r}")
    _str(s, "listenerPath", "linux.seccomp.listenerPath")

    def rule(r: dict[str, Any], field: str) -> None:
        names = r.get("names")
        if not isinstance(names, list) or not names:
            raise _fail(f"{field}.names", "must be a non-empty list")
        for j, name in enumerate(names):
            if not isinstance(name, str) or not _SYSCALL.fullmatch(name):
                raise _fail(f"{field}.names[{j}]", "must be a syscall name")
        if r.get("action") not in SECCOMP_ACTIONS:
            raise _fail(f"{field}.action", f"must be one of {', '.join(SECCOMP_ACTIONS)}")
        _int(r, "errnoRet", f"{field}.errnoRet", 0, 4095)

        def arg(a: dict[str, Any], afield: str) -> None:
            _int(a, "index", f"{afield}.index", 0, 5, required=True)
            _int(a, "value", f"{afield}.value", 0, _U64, required=True)
            _int(a, "valueTwo", f"{afield}.valueTwo", 0, _U64)
            if a.get("op") not in SECCOMP_OPS:
                raise _fail(f"{afield}.op", f"must be one of {', '.join(SECCOMP_OPS)}")

        _each(_list(r, "args", f"{field}.args"), f"{field}.args", arg)

    _each(_list(s, "syscalls", "linux.seccomp.syscalls"), "linux.seccomp.syscalls", rule)


def spec_annotations(spec: dict[str, Any]) -> dict[str, str]:
    value = spec.get("annotations") or {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
