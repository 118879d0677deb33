"""The OCI runtime spec → LXC configuration lines, as one pure function.

``lxc_config(spec, params, notes)`` returns an ordered list of ``(key, value)`` pairs; nothing
here touches LXC or the filesystem (the host facts a translation needs: whether a bind-mount
source is a directory, the cgroup layout, whether AppArmor/SELinux are enforced, are injected
through :class:`Params`). Each OCI concern has its own small ``configure_<concern>`` function,
called in order from :func:`lxc_config`, which reads like the spec's table of contents (lxcri
``create.go``, style-anchors.md section 5); the larger concerns live next to it:
:mod:`.security` (capabilities, rlimits, LSMs), :mod:`.resources` (cgroups), :mod:`.seccomp`,
:mod:`.setup_hooks` (what LXC has no key for). Golden-tested in ``tests/golden/lxc/`` and
``tests/golden/seccomp/``.

Policy (DESIGN.md section 8, docs/oci-support.md): a valid setting that LXC cannot express
exactly is *downgraded*: rendered as closely as LXC allows, with one message appended to
``notes`` that the backend logs as a warning. A setting that cannot be run at all, or that
would affect the host, is *refused* with an errdefs error naming the field.

Keys are documented in ``man lxc.container.conf`` (LXC 5.0.2); the facts measured on this kind of
host are in environment.md section 2 and DESIGN.md section 5.1.

The process arguments are deliberately *not* translated: ``lxc.init.cmd`` does not honour shell
quoting (environment.md section 2), so the in-container init reads argv from a file
(:mod:`runtime.lxc.owninit`).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runtime import cgroups_path
from runtime.errdefs import InvalidArgument, NotImplementedErr
from runtime.lxc import owninit, resources, security, setup_hooks
from runtime.lxc import seccomp as lxc_seccomp
from runtime.lxc.mountpoints import Plan, Target
from runtime.lxc.resources import CgroupHost

Line = tuple[str, str]

#: Namespace types of the OCI spec → LXC's namespace identifiers (/proc/PID/ns names).
NAMESPACES = {
    "pid": "pid",
    "network": "net",
    "mount": "mnt",
    "ipc": "ipc",
    "uts": "uts",
    "user": "user",
    "cgroup": "cgroup",
    "time": "time",
}

#: Destinations that LXC itself provides: ``lxc.mount.auto`` (proc, sys, cgroup),
#: ``lxc.autodev`` (a tmpfs /dev with the basic nodes) and ``lxc.pty.max`` (a private devpts on
#: /dev/pts). See ``man lxc.container.conf``, lxc.mount.auto / lxc.autodev / lxc.pty.max.
PROVIDED_BY_LXC = frozenset({"/proc", "/sys", "/sys/fs/cgroup", "/dev", "/dev/pts"})

#: OCI fields this runtime accepts but cannot honour on LXC, with how it downgrades them
#: (DESIGN.md section 8: "never silently dropped"; docs/oci-support.md has the full table).
_DOWNGRADED = (
    (("linux", "intelRdt"), "linux.intelRdt: not applied"),
    (("linux", "personality"), "linux.personality: not applied"),
    (("process", "ioPriority"), "process.ioPriority: not applied"),
    (("process", "scheduler"), "process.scheduler: not applied"),
    (("process", "execCPUAffinity"), "process.execCPUAffinity: not applied"),
)

#: Options that are OCI/containerd vocabulary, not mount(8) vocabulary; LXC would pass them to
#: the kernel as filesystem data and the mount would fail.
_DROP_OPTIONS = frozenset({"rbind", "bind"})


@dataclass(frozen=True)
class Params:
    """Everything the translation needs besides the spec."""

    #: LXC container name (also the default hostname source when ``hostname`` is absent).
    name: str
    #: Absolute host path of the prepared root filesystem.
    rootfs: str
    #: The ``lxc.hook.start-host`` command line (already shell-quoted: LXC runs hooks via sh).
    gate: str
    #: ``lxc.log.file`` and ``lxc.log.level``.
    log_file: str
    log_level: str = "WARN"
    #: Hostname used when the spec has none (containerd's container id).
    default_hostname: str = ""
    #: PID whose namespaces stand for "the runtime's own" (the shim daemon: ``os.getpid()``).
    shim_pid: int = 1
    #: Host fact for bind mounts: is this source a directory? (``create=dir`` vs ``create=file``)
    source_is_dir: Callable[[str], bool] = lambda _path: True
    #: The host's cgroup layout (:func:`runtime.lxc.resources.detect`).
    cgroup: CgroupHost = CgroupHost()
    #: Whether the host enforces AppArmor / SELinux (the keys are rendered either way).
    apparmor: bool = False
    selinux: bool = False
    #: ``lxc.rootfs.mount``: where LXC mounts the rootfs before pivoting; mount entries use it
    #: to name paths inside the container's /proc (read-only paths bind themselves).
    rootfs_mount: str = "/usr/lib/x86_64-linux-gnu/lxc/rootfs"
    #: Host directory of the in-container init (:mod:`runtime.lxc.owninit`), or "" for LXC's
    #: own in-process init. With it the container is run by ``lxc-start``.
    own_init_dir: str = ""
    #: The container may be checkpointed or is restored by CRIU: read-only paths are bound
    #: by the mount hook, not by mount entries (setup_hooks.mount_hook explains why).
    criu: bool = False
    #: The AppArmor profile of a spec without one (security.CRIU_APPARMOR_PROFILE for the
    #: own init).
    default_apparmor: str = security.DEFAULT_APPARMOR_PROFILE
    #: Host fact for masked paths: "dir", "file" or "" (absent) for a path of the container's
    #: /proc or /sys; None keeps the entries that fit either (see setup_hooks.path_entries).
    path_kind: Callable[[str], str] | None = None
    #: The mount points resolved (and made) inside the rootfs by
    #: :func:`runtime.lxc.mountpoints.prepare`; None (the pure tests) renders the spec's
    #: destinations as they are, with ``create=``.
    mount_plan: Plan | None = None
    #: The command running :mod:`runtime.lxc.rootpath` in the autodev hook (shell words).
    path_helper: str = field(default_factory=setup_hooks.path_helper)
    #: The shim daemon's own cgroup (from /proc/self/cgroup): where a relative
    #: ``linux.cgroupsPath`` is placed, as runc places it below its own.
    own_cgroup: str = "/"


def lxc_config(spec: dict[str, Any], params: Params,
               notes: list[str] | None = None) -> list[Line]:
    """The LXC configuration for ``spec``. Raises InvalidArgument/NotImplementedErr naming the
    offending field; validation happens before anything is emitted. What is downgraded (valid
    in the spec, not fully expressible on LXC) is appended to ``notes`` for the caller to log.
    """
    notes = [] if notes is None else notes
    validate(spec)
    namespaces = namespace_plan(spec)
    process = spec["process"]
    lines: list[Line] = []
    lines += configure_log(params)
    lines += configure_rootfs(params)
    lines += configure_hostname(spec, params, namespaces)
    lines += configure_namespaces(namespaces, params, notes)
    lines += configure_idmaps(spec, namespaces)
    lines += configure_console(bool(process.get("terminal")))
    lines += configure_init(spec, notes, own_init=bool(params.own_init_dir))
    # Capabilities, rlimits, user, groups, no_new_privs and seccomp are the in-container
    # init's (runtime.lxc.security.process_directives), not LXC's keys.
    lines += security.configure_privileges(process)
    lines += security.configure_lsm(spec, params.apparmor, params.selinux, notes,
                                    params.default_apparmor)
    lines += configure_auto_mounts(spec)
    lines += configure_mounts(spec, params)
    lines += configure_own_init(params)
    sysctls = configure_sysctls(spec, namespaces)
    ro_in_hook = bool(sysctls) or params.criu
    resolved = params.mount_plan.paths if params.mount_plan is not None else {}
    lines += setup_hooks.path_entries(spec, params.rootfs_mount, ro_in_hook=ro_in_hook,
                                      path_kind=params.path_kind, resolved=resolved)
    lines += setup_hooks.mount_hook(spec, sysctls, ro_in_hook=ro_in_hook, resolved=resolved,
                                    path_kind=params.path_kind)
    lines += setup_hooks.autodev_hook(spec, params.path_helper)
    lines += configure_cgroup_dir(spec, params)
    lines += resources.configure_resources(spec, params.cgroup, notes)
    lines += configure_hooks(params)
    notes += [text for (section, key), text in _DOWNGRADED
              if (spec.get(section) or {}).get(key) not in (None, "", [], {})]
    return lines


def seccomp_policy(spec: dict[str, Any],
                   notes: list[str] | None = None) -> lxc_seccomp.Filter | None:
    """The checked filter of ``linux.seccomp`` (the init loads it), or None without one."""
    policy = (spec.get("linux") or {}).get("seccomp")
    if not policy:
        return None
    if not isinstance(policy, dict):
        raise InvalidArgument("linux.seccomp: must be an object")
    return lxc_seccomp.plan(policy, [] if notes is None else notes)


def render(lines: Sequence[Line]) -> str:
    r"""The config file text: one ``key = value`` per line (``man lxc.container.conf``).

    The one choke point for config text (issue 12): every line the translation produced passes
    here, and a line that LXC would read differently from what was meant is refused with
    InvalidArgument instead of written. The validators (runtime.oci, :func:`validate`) refuse
    such spec fields first, naming the field; this rule holds even if a translator bug lets one
    through. How LXC 5.0.2 reads the file (liblxc parse.c/confile.c; measured here with
    lxc-execute, docs/security.md "Config text"):

    - a line ends at ``\r`` as well as ``\n``, and NUL ends the file: a value holding one of
      them would start a line of the spec author's choosing (``lxc.hook.pre-start = …``, run as
      root on the host). ``\f``, ``\v``, U+0085 and U+2028 are ordinary bytes;
    - the key is everything before the first ``=`` (spaces and tabs trimmed); a key outside
      :func:`known_key` is refused, so no spec string can name a key of its own;
    - the value loses leading and trailing spaces and tabs, then one pair of matching quotes
      around it: a value that would be changed by that is written inside double quotes, which
      LXC strips again, so it reads back exactly;
    - an empty value means "clear every earlier setting of this key" (``lxc.environment =``
      drops the environment, ``lxc.cgroup2.memory.max =`` the memory limit): refused.
    """
    out: list[str] = []
    for key, value in lines:
        if not known_key(key):
            raise InvalidArgument(f"LXC config: key {key!r} is not one this runtime writes")
        problem = value_problem(value)
        if problem:
            raise InvalidArgument(f"LXC config: {key}: value {problem}")
        out.append(f"{key} = {_quote(value)}\n")
    return "".join(out)


#: The characters that end an LXC config line (``\r``, ``\n``) or the whole file (NUL).
LINE_BREAKS = ("\r", "\n", "\0")


def value_problem(value: str) -> str:
    """Why ``value`` cannot be one LXC config value, or "" when it can."""
    if not value:
        return "must not be empty (LXC reads an empty value as: clear this key)"
    if any(c in value for c in LINE_BREAKS):
        return "must not contain a line break (\\r or \\n) or NUL (LXC would read a new line)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return ""


def _quote(value: str) -> str:
    # parse.c trims " \t" on both sides, then strips one pair of matching quotes (confile.c
    # parse_line). Wrapping in double quotes undoes both for any value (measured: "Q4= a "
    # reads back as Q4= a ).
    if value != value.strip(" \t") or value[0] in "\"'":
        return f'"{value}"'
    return value


#: Keys the translation writes with a fixed name.
_FIXED_KEYS = frozenset({
    "lxc.log.file", "lxc.log.level", "lxc.rootfs.path", "lxc.rootfs.mount", "lxc.uts.name",
    "lxc.net.0.type", "lxc.idmap", "lxc.console.path", "lxc.tty.max", "lxc.pty.max",
    "lxc.environment", "lxc.init.cwd", "lxc.init.uid", "lxc.init.gid", "lxc.init.groups",
    "lxc.init.cmd", "lxc.cap.keep", "lxc.no_new_privs", "lxc.proc.oom_score_adj",
    "lxc.apparmor.profile", "lxc.selinux.context", "lxc.seccomp.profile", "lxc.mount.auto",
    "lxc.autodev", "lxc.mount.entry", "lxc.hook.mount", "lxc.hook.autodev",
    "lxc.hook.start-host", "lxc.cgroup.dir.container", "lxc.cgroup.dir.monitor",
})
#: Key families the translation writes, each with a strict pattern: the namespaces it joins,
#: the rlimits it sets (getrlimit(2) names), and cgroup files of the controllers it limits
#: (``lxc.cgroup.<file>`` v1, ``lxc.cgroup2.<file>`` v2; no "/" so LXC cannot leave the
#: container's cgroup, no ``cgroup.*`` core files).
_KEY_FAMILIES = (
    re.compile(r"lxc\.namespace\.share\.(?:" + "|".join(NAMESPACES.values()) + ")"),
    re.compile(r"lxc\.prlimit\.(?:as|core|cpu|data|fsize|locks|memlock|msgqueue|nice|nofile"
               r"|nproc|rss|rtprio|rttime|sigpending|stack)"),
    re.compile(r"lxc\.cgroup\.(?:blkio|cpu|cpuset|devices|memory|pids)(?:\.[A-Za-z0-9_]+)+"),
    re.compile(r"lxc\.cgroup2\.(?:cpu|cpuset|devices|hugetlb|io|memory|misc|pids|rdma)"
               r"(?:\.[A-Za-z0-9_]+)+"),
)


def known_key(key: str) -> bool:
    """Whether ``key`` is one the translation writes (the renderer's allowlist)."""
    return key in _FIXED_KEYS or any(p.fullmatch(key) for p in _KEY_FAMILIES)


def downgrades(spec: dict[str, Any], params: Params) -> list[str]:
    """What :func:`lxc_config` downgrades for ``spec`` (one message per setting)."""
    notes: list[str] = []
    lxc_config(spec, params, notes)
    seccomp_policy(spec, notes)
    return notes


# --- validation ----------------------------------------------------------------------------


def validate(spec: dict[str, Any]) -> None:
    """Check the fields the translation relies on (lxcri ``checkSpec``)."""
    if not isinstance(spec, dict):
        raise InvalidArgument("spec: must be a JSON object")
    process = spec.get("process")
    if not isinstance(process, dict):
        raise InvalidArgument("process: must be an object")
    args = process.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise InvalidArgument("process.args: must be a non-empty list of strings")
    if not args[0]:
        raise InvalidArgument("process.args[0]: must not be empty")
    if any("\0" in a for a in args):
        raise InvalidArgument("process.args: must not contain NUL bytes")
    _validate_env(process.get("env", []))
    cwd = process.get("cwd", "/")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise InvalidArgument("process.cwd: must be an absolute path")
    _validate_user(process.get("user", {}))
    # process.terminal is a stdio matter, not an LXC key: the init inherits whatever stdio the
    # runtime gives the monitor (lxc.console.path = none), a pty slave for a terminal.
    root = spec.get("root", {})
    if not isinstance(root, dict):
        raise InvalidArgument("root: must be an object")
    # root.readonly is honoured by the mount hook (runtime/lxc/setup_hooks.py): LXC's own
    # lxc.rootfs.options = ro would make the mount points' create=dir fail with EROFS.
    _validate_mounts(spec.get("mounts", []))
    for where, value in config_strings(spec):
        problem = text_problem(value)
        if problem:
            raise InvalidArgument(f"{where}: {problem}")


def text_problem(value: str) -> str:
    """Why a spec string cannot be part of LXC config text, or "" (see :func:`render`)."""
    if any(c in value for c in LINE_BREAKS):
        return ("must not contain a line break (\\r or \\n) or NUL: LXC config lines cannot "
                "hold one")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return ""


def config_strings(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Every spec string the translation writes into LXC config text, with its field path:
    the list :func:`validate` checks against :func:`text_problem` (issue 12). process.args
    is not here (argv on lxc-execute's command line), nor hooks (run by the runtime itself).
    Tolerant of wrong shapes: only strings are listed, the type checks are elsewhere."""
    out: list[tuple[str, str]] = []

    def add(field: str, value: Any) -> None:
        if isinstance(value, str):
            out.append((field, value))

    def items(value: Any) -> list[Any]:
        return value if isinstance(value, list) else []

    def obj(value: Any) -> dict[str, Any]:
        return value if isinstance(value, dict) else {}

    process = obj(spec.get("process"))
    for i, env in enumerate(items(process.get("env"))):
        add(f"process.env[{i}]", env)
    for key in ("cwd", "apparmorProfile", "selinuxLabel"):
        add(f"process.{key}", process.get(key))
    for key in ("hostname", "domainname"):
        add(key, spec.get(key))
    add("root.path", obj(spec.get("root")).get("path"))
    for i, m in enumerate(items(spec.get("mounts"))):
        m = obj(m)
        for key in ("destination", "source", "type"):
            add(f"mounts[{i}].{key}", m.get(key))
        for j, option in enumerate(items(m.get("options"))):
            add(f"mounts[{i}].options[{j}]", option)
    linux = obj(spec.get("linux"))
    for i, ns in enumerate(items(linux.get("namespaces"))):
        add(f"linux.namespaces[{i}].path", obj(ns).get("path"))
    for i, d in enumerate(items(linux.get("devices"))):
        add(f"linux.devices[{i}].path", obj(d).get("path"))
    for key in ("maskedPaths", "readonlyPaths"):
        for i, path in enumerate(items(linux.get(key))):
            add(f"linux.{key}[{i}]", path)
    for key, value in obj(linux.get("sysctl")).items():
        add(f"linux.sysctl[{_quoted(key)}] (name)", key)
        add(f"linux.sysctl[{_quoted(key)}]", value)
    resources = obj(linux.get("resources"))
    for key, value in obj(resources.get("unified")).items():
        add(f"linux.resources.unified[{_quoted(key)}] (name)", key)
        # A unified value may hold several lines (written one by one, as runc's
        # WriteFileByLine does): checked per line in runtime.lxc.resources.
        add(f"linux.resources.unified[{_quoted(key)}]",
            value.replace("\n", "") if isinstance(value, str) else None)
    cpu = obj(resources.get("cpu"))
    for key in ("cpus", "mems"):
        add(f"linux.resources.cpu.{key}", cpu.get(key))
    return out


def _quoted(key: str) -> str:
    # JSON string syntax: a hostile key shows escaped in the message, never raw.
    return json.dumps(key)


def _member(field: str, key: str) -> str:
    """``field.key`` for a plain key, ``field["…"]`` (escaped) for any other."""
    plain = key and all(c.isascii() and (c.isalnum() or c in "_.-/") for c in key)
    return f"{field}.{key}" if plain else f"{field}[{_quoted(key)}]"


def _validate_env(env: Any) -> None:
    if not isinstance(env, list):
        raise InvalidArgument("process.env: must be a list of KEY=VALUE strings")
    for i, item in enumerate(env):
        if not isinstance(item, str) or "=" not in item or item.startswith("="):
            raise InvalidArgument(f"process.env[{i}]: must be a KEY=VALUE string")


def _validate_user(user: Any) -> None:
    if not isinstance(user, dict):
        raise InvalidArgument("process.user: must be an object")
    for key in ("uid", "gid"):
        value = user.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidArgument(f"process.user.{key}: must be a non-negative integer")
    groups = user.get("additionalGids", [])
    if not isinstance(groups, list) or not all(
        isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in groups
    ):
        raise InvalidArgument(
            "process.user.additionalGids: must be a list of non-negative integers")


def _validate_mounts(mounts: Any) -> None:
    if not isinstance(mounts, list):
        raise InvalidArgument("mounts: must be a list")
    for i, m in enumerate(mounts):
        if not isinstance(m, dict):
            raise InvalidArgument(f"mounts[{i}]: must be an object")
        dest = m.get("destination")
        if not isinstance(dest, str) or not dest.startswith("/"):
            raise InvalidArgument(f"mounts[{i}].destination: must be an absolute path")
        if ".." in dest.split("/"):
            raise InvalidArgument(f"mounts[{i}].destination: must not contain '..'")
        if posixpath.normpath(dest).lstrip("/") == "":
            # The fstab target would be empty (a missing field to getmntent).
            raise InvalidArgument(f"mounts[{i}].destination: mounting over the container's "
                                  "root is not supported")
        opts = m.get("options", [])
        if not isinstance(opts, list) or not all(isinstance(o, str) for o in opts):
            raise InvalidArgument(f"mounts[{i}].options: must be a list of strings")
        for key in ("type", "source"):
            if not isinstance(m.get(key, ""), str):
                raise InvalidArgument(f"mounts[{i}].{key}: must be a string")
        if m.get("source", "").startswith("#"):
            # getmntent(3) skips a line starting with "#" (a comment) and has no escape for
            # it: the mount would silently not happen.
            raise InvalidArgument(f"mounts[{i}].source: must not start with '#'")


# --- namespaces ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NamespacePlan:
    """What to do per LXC namespace: ``new`` ones are the default, the others are listed."""

    share: tuple[tuple[str, str], ...]  # (lxc identifier, path) to join
    keep: tuple[str, ...]  # lxc identifiers of the shim's own (absent from the spec)
    user: bool = False  # a new user namespace (with lxc.idmap)
    cgroup: bool = True  # the spec asked for a new cgroup namespace

    def is_new(self, ident: str) -> bool:
        return ident not in self.keep and all(ident != s for s, _ in self.share)


def namespace_plan(spec: dict[str, Any]) -> NamespacePlan:
    """Decide per namespace from ``linux.namespaces``: absent → keep the shim's, with ``path``
    → join it, without → new. The mount namespace must be new (LXC builds the container's
    mounts in it). The PID namespace may be new, joined by path (``shareProcessNamespace``,
    containerd's pod-level PID mode) or the runtime's own (hostPID): LXC's start mode handles
    all three (measured with LXC 5.0.2: ``lxc.namespace.share.pid``); the program is then not
    PID 1, as under runc."""
    linux = spec.get("linux", {})
    entries = linux.get("namespaces", []) if isinstance(linux, dict) else None
    if not isinstance(entries, list):
        raise InvalidArgument("linux.namespaces: must be a list")
    seen: dict[str, str] = {}
    for i, ns in enumerate(entries):
        field = f"linux.namespaces[{i}]"
        if not isinstance(ns, dict) or ns.get("type") not in NAMESPACES:
            raise InvalidArgument(f"{field}.type: must be one of {', '.join(NAMESPACES)}")
        if ns["type"] in seen:
            raise InvalidArgument(f"{field}.type: duplicate namespace {ns['type']!r}")
        path = ns.get("path", "")
        if not isinstance(path, str) or (path and not path.startswith("/")):
            raise InvalidArgument(f"{field}.path: must be an absolute path")
        seen[ns["type"]] = path
    return _plan_from(seen)


def _plan_from(seen: dict[str, str]) -> NamespacePlan:
    if "mount" not in seen:
        raise NotImplementedErr("linux.namespaces: a new mount namespace is required")
    if seen["mount"]:
        raise NotImplementedErr("linux.namespaces: joining a mount namespace is not supported")
    if "time" in seen:
        raise NotImplementedErr("linux.namespaces: time namespaces are not supported")
    for kind in ("user", "cgroup"):
        if seen.get(kind):
            raise NotImplementedErr(f"linux.namespaces: joining a {kind} namespace is not "
                                    "supported")
    share = tuple((NAMESPACES[t], p) for t, p in seen.items() if p)
    keep = tuple(NAMESPACES[t] for t in ("network", "ipc", "uts", "pid") if t not in seen)
    return NamespacePlan(share=share, keep=keep, user="user" in seen, cgroup="cgroup" in seen)


# --- the configure_<concern> steps, in lxc_config's order ----------------------------------


def configure_log(params: Params) -> list[Line]:
    # The backend quotes the ERROR lines of this file when LXC fails.
    return [("lxc.log.file", params.log_file), ("lxc.log.level", params.log_level)]


def configure_rootfs(params: Params) -> list[Line]:
    # "dir:" is the plain directory storage backend; LXC bind-mounts it in the container's mount
    # namespace and pivots into it (man lxc.container.conf, lxc.rootfs.path). The backend has
    # already mounted containerd's rootfs mounts there, or resolved root.path.
    return [("lxc.rootfs.path", f"dir:{params.rootfs}"),
            ("lxc.rootfs.mount", params.rootfs_mount)]


def configure_hostname(spec: dict[str, Any], params: Params, ns: NamespacePlan) -> list[Line]:
    hostname = spec.get("hostname", "")
    if not isinstance(hostname, str):
        raise InvalidArgument("hostname: must be a string")
    if not ns.is_new("uts"):
        # Setting lxc.uts.name without a new UTS namespace would rename the host (or the pod).
        if hostname:
            raise InvalidArgument("hostname: requires a new uts namespace")
        return []
    return [("lxc.uts.name", hostname or params.default_hostname or params.name)]


def configure_namespaces(ns: NamespacePlan, params: Params, notes: list[str]) -> list[Line]:
    """lxc.namespace.share.<ns> = <path> joins an existing namespace (the CNI case, verified in
    environment.md section 5). A namespace the spec leaves out is the runtime's own (OCI), so
    it is joined the same way through /proc/<shim pid>/ns/<ns>: lxc.namespace.keep would be
    the direct key, but with lxc-execute on LXC 5.0.2 it breaks the container's setup
    (measured: mount_autodev fails with EOVERFLOW for "keep = net", "keep = ipc")."""
    lines: list[Line] = [(f"lxc.namespace.share.{ident}", path) for ident, path in ns.share]
    lines += [(f"lxc.namespace.share.{ident}", f"/proc/{params.shim_pid}/ns/{ident}")
              for ident in ns.keep]
    if not ns.cgroup:
        # LXC always unshares the cgroup namespace (its log: "Unshared CLONE_NEWCGROUP").
        notes.append("linux.namespaces: no cgroup namespace asked, but LXC always makes one")
    if ns.is_new("net"):
        # A new network namespace with only a loopback device; networks come later (DESIGN §7).
        lines.append(("lxc.net.0.type", "empty"))
    return lines


def configure_idmaps(spec: dict[str, Any], ns: NamespacePlan) -> list[Line]:
    """A new user namespace needs uid and gid mappings: ``lxc.idmap = u|g <container id>
    <host id> <range>`` (``man lxc.container.conf``, lxc.idmap). LXC makes the user namespace
    whenever idmaps are set; mappings without a user namespace are refused (config-linux.md
    "User namespace mappings" only defines them with one)."""
    linux = spec.get("linux") or {}
    maps = [("u", m) for m in linux.get("uidMappings") or []]
    maps += [("g", m) for m in linux.get("gidMappings") or []]
    if not ns.user:
        if maps:
            raise InvalidArgument("linux.uidMappings: mappings require a user namespace")
        return []
    if not linux.get("uidMappings") or not linux.get("gidMappings"):
        raise InvalidArgument("linux.uidMappings: a user namespace needs uid and gid mappings")
    return [("lxc.idmap", f"{kind} {m['containerID']} {m['hostID']} {m['size']}")
            for kind, m in maps]


def configure_console(terminal: bool = False) -> list[Line]:
    # Without a terminal, console.path = none: the init inherits the monitor's stdin/stdout/
    # stderr, which are containerd's FIFOs (environment.md section 2). With a terminal, LXC's
    # default console: the init's stdio is a pty of the container's own devpts (so `tty` names
    # /dev/pts/N inside), which the monitor proxies to its controlling terminal, the shim's pty,
    # forwarding window-size changes (measured). No ttys; a private devpts for programs that
    # open ptys themselves.
    console = [] if terminal else [("lxc.console.path", "none")]
    return [*console, ("lxc.tty.max", "0"), ("lxc.pty.max", "1024")]


def configure_init(spec: dict[str, Any], notes: list[str], *, own_init: bool = False
                   ) -> list[Line]:
    process = spec["process"]
    lines: list[Line] = [("lxc.environment", item) for item in process.get("env", [])]
    if not own_init:
        # The project's init makes a missing cwd and enters it (runc makes it too); LXC's
        # chdir to lxc.init.cwd, before the init runs, failed the create for a missing one.
        lines.append(("lxc.init.cwd", process.get("cwd", "/")))
    # user, groups: the in-container init switches to them (runtime.lxc.security); LXC runs
    # it as root. process.user.umask: LXC 5 has no key for it; the backend sets it on the
    # monitor, whose umask the program inherits (runtime.reaper, spawn(umask=...)).
    return lines


def configure_sysctls(spec: dict[str, Any], ns: NamespacePlan) -> dict[str, str]:
    """``linux.sysctl`` plus ``domainname`` (as kernel.domainname), written by the mount hook.
    Only namespaced sysctls of namespaces that are the container's own are accepted: anything
    else would change the host (config-linux.md "Sysctl")."""
    linux = spec.get("linux") or {}
    sysctls = dict(linux.get("sysctl") or {})
    domain = spec.get("domainname")
    if domain:
        if not ns.is_new("uts"):
            raise InvalidArgument("domainname: requires a new uts namespace")
        sysctls["kernel.domainname"] = domain
    for key in sysctls:
        kind = setup_hooks.sysctl_namespace(key)
        field = ("domainname" if key == "kernel.domainname" and domain
                 else _member("linux.sysctl", key))
        if kind is None:
            raise InvalidArgument(f"{field}: not a namespaced sysctl; setting it would change "
                                  "the host")
        if kind in ns.keep or (kind == "uts" and not ns.is_new("uts")):
            raise InvalidArgument(f"{field}: the container shares the host's {kind} namespace")
    return sysctls


def configure_auto_mounts(spec: dict[str, Any]) -> list[Line]:
    # proc:rw, not proc:mixed: mixed makes /proc/sys read-only on its own, which the spec did
    # not necessarily ask and which stops the sysctls; the spec's readonlyPaths (/proc/sys,
    # /proc/sysrq-trigger for containerd and CRI) are applied by the mount hook instead.
    # sys follows the spec's /sys mount (ro unless it asks rw); its nosuid, nodev, noexec are
    # set by the mount hook (setup_hooks.special_remounts). cgroup:ro unless the spec mounts
    # /sys/fs/cgroup writable: cgroup:mixed makes the container's own cgroup writable, where
    # it could raise its own memory.limit_in_bytes or pids.max (issue 12; runc gives a
    # container without a writable cgroup mount no writable cgroup file). With cgroup:mixed
    # only the container's own cgroup is writable, the hierarchy around it stays read-only.
    # ":force" because LXC otherwise skips it when the container keeps CAP_SYS_ADMIN
    # (measured: an empty /sys/fs/cgroup; man lxc.container.conf, cgroup:mixed:force).
    # autodev builds a minimal /dev on a tmpfs (lxc.autodev), needed with lxc.tty.max = 0.
    sys_mode, cgroup_mode = "ro", "ro"
    for m in spec.get("mounts") or []:
        dest = posixpath.normpath(m["destination"])
        writable = not setup_hooks.read_only(m.get("options") or [])
        if dest == "/sys" and writable:
            sys_mode = "rw"
        if dest == "/sys/fs/cgroup" and writable:
            cgroup_mode = "mixed"
    return [("lxc.mount.auto", f"proc:rw sys:{sys_mode} cgroup:{cgroup_mode}:force"),
            ("lxc.autodev", "1")]


def configure_mounts(spec: dict[str, Any], params: Params) -> list[Line]:
    """Each spec mount not provided by LXC → an fstab-format ``lxc.mount.entry``."""
    lines: list[Line] = []
    for i, m in enumerate(spec.get("mounts", [])):
        dest = posixpath.normpath(m["destination"])
        if dest in PROVIDED_BY_LXC:
            continue
        for j, option in enumerate(m.get("options", [])):
            # LXC reads these from the entry itself (man lxc.container.conf,
            # lxc.mount.entry; LXC 5 also idmap=): create= would make the mount point through
            # the image's symlinks on the host again (issue 12), the others change what is
            # mounted. runc passes them to mount(2), which refuses them.
            if option in ("optional", "relative") or option.startswith(("create=", "idmap=")):
                raise InvalidArgument(f"mounts[{i}].options[{j}]: {option!r} is an LXC "
                                      "setting, not a mount option")
        target = params.mount_plan.mounts.get(i) if params.mount_plan is not None else None
        lines.append(("lxc.mount.entry", mount_entry(m, dest, params, target)))
    return lines


def mount_entry(m: dict[str, Any], dest: str, params: Params,
                target: Target | None = None) -> str:
    """One fstab line. The target is relative, so LXC mounts it under the container's rootfs.
    With a ``target`` from :mod:`runtime.lxc.mountpoints` the mount point is the resolved one,
    made already (or made by LXC with ``create=`` only inside a filesystem LXC mounted itself:
    LXC's ``create=`` follows the image's symlinks onto the host). Without one,
    ``create=dir|file`` makes the mount point (man lxc.container.conf, lxc.mount.entry)."""
    options = list(m.get("options", []))
    mtype = m.get("type", "") or "none"
    source = m.get("source", "") or mtype
    is_bind = mtype == "bind" or "bind" in options or "rbind" in options
    flags = [o for o in options if o not in _DROP_OPTIONS]
    create = "dir"
    if is_bind:
        mtype = "none"
        flags.insert(0, "rbind" if "rbind" in options else "bind")
        create = "dir" if params.source_is_dir(source) else "file"
    if target is not None:
        dest, create = target.path, target.create
    if create:
        flags.append(f"create={create}")
    # getmntent(3) decodes the escapes in all four fields (measured with glibc 2.36), so a
    # type or option holding a space cannot shift the fields either.
    return " ".join([_fstab_escape(source), _fstab_escape(dest.lstrip("/")),
                     _fstab_escape(mtype), _fstab_escape(",".join(flags) or "defaults"),
                     "0", "0"])


def _fstab_escape(field: str) -> str:
    # getmntent(3) decodes \040 (space), \011 (tab), \012 (newline) and \134 (backslash).
    out = field.replace("\\", "\\134")
    return out.replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")


def configure_own_init(params: Params) -> list[Line]:
    """The in-container init's directory on the autodev /dev, read-only (the container's root
    must not change the init or its files: the binary is one inode shared by every container
    of a build), and the init as ``lxc.init.cmd`` (LXC execs it as PID 1; its argv is in that
    directory)."""
    if not params.own_init_dir:
        return []
    target = owninit.MOUNT_POINT.lstrip("/")
    return [("lxc.mount.entry",
             f"{_fstab_escape(params.own_init_dir)} {target} none bind,ro,create=dir 0 0"),
            ("lxc.init.cmd", owninit.INIT_PATH)]


def configure_cgroup_dir(spec: dict[str, Any], params: Params) -> list[Line]:
    """``linux.cgroupsPath`` (:mod:`runtime.cgroups_path`) as the container's cgroup,
    ``lxc.cgroup.dir.container``, in every hierarchy; LXC creates the missing parents and, at
    the end, removes only that last directory (measured on LXC 5.0.2: the parents stay, as
    with runc). The key must come with ``lxc.cgroup.dir.monitor`` (man lxc.container.conf):
    the monitor keeps LXC's usual ``lxc.monitor.<name>``. LXC, running as root, first escapes
    to the root cgroup (lxc.cgroup.relative = 0), so the path is taken from each root. No
    ``.inner``: the processes sit in the limited cgroup itself, as under runc, so that pod and
    container statistics read it directly. Without a cgroupsPath, LXC's own
    ``lxc.payload.<name>``."""
    path = cgroups_path.resolve((spec.get("linux") or {}).get("cgroupsPath"),
                                params.own_cgroup)
    if not path:
        return []
    return [("lxc.cgroup.dir.container", path),
            ("lxc.cgroup.dir.monitor", f"lxc.monitor.{params.name}")]


def configure_hooks(params: Params) -> list[Line]:
    # start-host runs on the host after the container is set up and before its init runs, with
    # LXC_PID in the environment (man lxc.container.conf; DESIGN.md section 5.1): the gate that
    # holds the OCI "created" state. LXC runs the hook string through /bin/sh with the arguments
    # "<name> lxc start-host" appended (measured). No gate ("") for a CRIU restore, whose
    # processes are already past it.
    return [("lxc.hook.start-host", params.gate)] if params.gate else []
