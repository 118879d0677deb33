"""The OCI runtime spec → LXC configuration lines, as one pure function.

``lxc_config(spec, params)`` returns an ordered list of ``(key, value)`` pairs; nothing here
touches LXC or the filesystem (the one host fact a translation needs, whether a bind-mount source
is a directory, is injected as ``params.source_is_dir``). Each OCI concern has its own small
``configure_<concern>`` function, called in order from :func:`lxc_config`, which reads like the
spec's table of contents (lxcri ``create.go``, style-anchors.md section 5). Golden-tested in
``tests/golden/lxc/``.

Keys are documented in ``man lxc.container.conf`` (LXC 5.0.2); the facts measured on this kind of
host are in environment.md section 2 and DESIGN.md section 5.1.

The process arguments are deliberately *not* translated: ``lxc.init.cmd`` does not honour shell
quoting (environment.md section 2), so the backend passes argv on ``lxc-execute``'s command line.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from runtime.errdefs import InvalidArgument, NotImplementedErr

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

#: OCI fields present in real specs that this translation does not render yet. They are
#: reported by :func:`unsupported_fields` so the backend can log a downgrade: DESIGN.md section 8
#: says "never silently dropped".
_NOT_YET = (
    ("process", "capabilities"),
    ("process", "rlimits"),
    ("process", "noNewPrivileges"),
    ("process", "apparmorProfile"),
    ("process", "selinuxLabel"),
    ("process", "oomScoreAdj"),
    ("linux", "seccomp"),
    ("linux", "maskedPaths"),
    ("linux", "readonlyPaths"),
    ("linux", "resources"),
    ("linux", "sysctl"),
    ("linux", "devices"),
    ("linux", "cgroupsPath"),
    ("linux", "mountLabel"),
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


def lxc_config(spec: dict[str, Any], params: Params) -> list[Line]:
    """The LXC configuration for ``spec``. Raises InvalidArgument/NotImplementedErr naming the
    offending field; validation happens before anything is emitted."""
    validate(spec)
    namespaces = namespace_plan(spec)
    lines: list[Line] = []
    lines += configure_log(params)
    lines += configure_rootfs(params)
    lines += configure_hostname(spec, params, namespaces)
    lines += configure_namespaces(namespaces, params)
    lines += configure_console()
    lines += configure_init(spec)
    lines += configure_auto_mounts()
    lines += configure_mounts(spec, params)
    lines += configure_hooks(params)
    return lines


def render(lines: Sequence[Line]) -> str:
    """The config file text: one ``key = value`` per line (``man lxc.container.conf``)."""
    for key, value in lines:
        if "\n" in value or "\0" in value:
            raise InvalidArgument(f"{key}: value must not contain a newline or NUL")
    return "".join(f"{key} = {value}\n" for key, value in lines)


def unsupported_fields(spec: dict[str, Any]) -> list[str]:
    """Dotted names of the OCI fields present in ``spec`` that are not translated yet."""
    found = []
    for section, key in _NOT_YET:
        part = spec.get(section)
        if isinstance(part, dict) and part.get(key) not in (None, [], {}, "", False):
            found.append(f"{section}.{key}")
    return found


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
    if process.get("terminal"):
        raise NotImplementedErr("process.terminal: a terminal is not supported yet")
    root = spec.get("root", {})
    if not isinstance(root, dict):
        raise InvalidArgument("root: must be an object")
    if root.get("readonly"):
        # LXC mounts a read-only rootfs before it creates mount points (create=dir fails with
        # EROFS, measured), so this needs the mount points made beforehand; not done yet.
        raise NotImplementedErr("root.readonly: a read-only root filesystem is not supported yet")
    _validate_mounts(spec.get("mounts", []))


def _validate_env(env: Any) -> None:
    if not isinstance(env, list):
        raise InvalidArgument("process.env: must be a list of KEY=VALUE strings")
    for i, item in enumerate(env):
        if not isinstance(item, str) or "=" not in item or item.startswith("="):
            raise InvalidArgument(f"process.env[{i}]: must be a KEY=VALUE string")
        if "\n" in item or "\0" in item:
            raise InvalidArgument(f"process.env[{i}]: must not contain a newline or NUL")


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
        opts = m.get("options", [])
        if not isinstance(opts, list) or not all(isinstance(o, str) for o in opts):
            raise InvalidArgument(f"mounts[{i}].options: must be a list of strings")
        for key in ("type", "source"):
            if not isinstance(m.get(key, ""), str):
                raise InvalidArgument(f"mounts[{i}].{key}: must be a string")


# --- namespaces ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NamespacePlan:
    """What to do per LXC namespace: ``new`` ones are the default, the others are listed."""

    share: tuple[tuple[str, str], ...]  # (lxc identifier, path) to join
    keep: tuple[str, ...]  # lxc identifiers of the shim's own (absent from the spec)

    def is_new(self, ident: str) -> bool:
        return ident not in self.keep and all(ident != s for s, _ in self.share)


def namespace_plan(spec: dict[str, Any]) -> NamespacePlan:
    """Decide per namespace from ``linux.namespaces``: absent → keep the shim's, with ``path``
    → join it, without → new. The pid and mount namespaces must be new: the created state relies
    on the init being PID 1 of its own namespace (``NSpid: <pid> 1``, DESIGN.md section 5.1)."""
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
    for required in ("pid", "mount"):
        if required not in seen:
            raise NotImplementedErr(f"linux.namespaces: a new {required} namespace is required")
        if seen[required]:
            raise NotImplementedErr(f"linux.namespaces: joining a {required} namespace is not "
                                    "supported")
    for unsupported in ("user", "time"):
        if unsupported in seen:
            raise NotImplementedErr(f"linux.namespaces: {unsupported} namespaces are not "
                                    "supported yet")
    if seen.get("cgroup"):
        raise NotImplementedErr("linux.namespaces: joining a cgroup namespace is not supported")
    share = tuple((NAMESPACES[t], p) for t, p in seen.items() if p)
    keep = tuple(NAMESPACES[t] for t in ("network", "ipc", "uts") if t not in seen)
    return NamespacePlan(share=share, keep=keep)


# --- the configure_<concern> steps, in lxc_config's order ----------------------------------


def configure_log(params: Params) -> list[Line]:
    # The backend quotes the ERROR lines of this file when lxc-execute fails.
    return [("lxc.log.file", params.log_file), ("lxc.log.level", params.log_level)]


def configure_rootfs(params: Params) -> list[Line]:
    # "dir:" is the plain directory storage backend; LXC bind-mounts it in the container's mount
    # namespace and pivots into it (man lxc.container.conf, lxc.rootfs.path). The backend has
    # already mounted containerd's rootfs mounts there, or resolved root.path.
    return [("lxc.rootfs.path", f"dir:{params.rootfs}")]


def configure_hostname(spec: dict[str, Any], params: Params, ns: NamespacePlan) -> list[Line]:
    hostname = spec.get("hostname", "")
    if not isinstance(hostname, str) or "\n" in hostname:
        raise InvalidArgument("hostname: must be a string")
    if not ns.is_new("uts"):
        # Setting lxc.uts.name without a new UTS namespace would rename the host (or the pod).
        if hostname:
            raise InvalidArgument("hostname: requires a new uts namespace")
        return []
    return [("lxc.uts.name", hostname or params.default_hostname or params.name)]


def configure_namespaces(ns: NamespacePlan, params: Params) -> list[Line]:
    """lxc.namespace.share.<ns> = <path> joins an existing namespace (the CNI case, verified in
    environment.md section 5). A namespace the spec leaves out is the runtime's own (OCI), so
    it is joined the same way through /proc/<shim pid>/ns/<ns>: lxc.namespace.keep would be
    the direct key, but with lxc-execute on LXC 5.0.2 it breaks the container's setup
    (measured: mount_autodev fails with EOVERFLOW for "keep = net", "keep = ipc")."""
    lines: list[Line] = [(f"lxc.namespace.share.{ident}", path) for ident, path in ns.share]
    lines += [(f"lxc.namespace.share.{ident}", f"/proc/{params.shim_pid}/ns/{ident}")
              for ident in ns.keep]
    if ns.is_new("net"):
        # A new network namespace with only a loopback device; networks come later (DESIGN §7).
        lines.append(("lxc.net.0.type", "empty"))
    return lines


def configure_console() -> list[Line]:
    # console.path = none: the init inherits lxc-execute's stdin/stdout/stderr, which are
    # containerd's FIFOs (environment.md section 2). No ttys; a private devpts for programs that
    # open ptys themselves.
    return [("lxc.console.path", "none"), ("lxc.tty.max", "0"), ("lxc.pty.max", "1024")]


def configure_init(spec: dict[str, Any]) -> list[Line]:
    process = spec["process"]
    lines: list[Line] = [("lxc.environment", item) for item in process.get("env", [])]
    lines.append(("lxc.init.cwd", process.get("cwd", "/")))
    user = process.get("user", {})
    lines.append(("lxc.init.uid", str(user.get("uid", 0))))
    lines.append(("lxc.init.gid", str(user.get("gid", 0))))
    groups = user.get("additionalGids", [])
    if groups:
        # lxc.init.groups (liblxc 5, absent from the 5.0.2 man page) sets the supplementary
        # groups; comma-separated, measured: groups=10,20.
        lines.append(("lxc.init.groups", ",".join(str(g) for g in groups)))
    return lines


def configure_auto_mounts() -> list[Line]:
    # proc:mixed and sys:ro as in environment.md's working config; cgroup:mixed gives the
    # container its own cgroup read-write under a read-only hierarchy. autodev builds a minimal
    # /dev on a tmpfs (man lxc.container.conf, lxc.autodev), needed with lxc.tty.max = 0.
    return [("lxc.mount.auto", "proc:mixed sys:ro cgroup:mixed"), ("lxc.autodev", "1")]


def configure_mounts(spec: dict[str, Any], params: Params) -> list[Line]:
    """Each spec mount not provided by LXC → an fstab-format ``lxc.mount.entry``."""
    lines: list[Line] = []
    for m in spec.get("mounts", []):
        dest = posixpath.normpath(m["destination"])
        if dest in PROVIDED_BY_LXC:
            continue
        lines.append(("lxc.mount.entry", mount_entry(m, dest, params)))
    return lines


def mount_entry(m: dict[str, Any], dest: str, params: Params) -> str:
    """One fstab line. The target is relative, so LXC mounts it under the container's rootfs;
    ``create=dir|file`` makes the mount point (man lxc.container.conf, lxc.mount.entry)."""
    options = list(m.get("options", []))
    mtype = m.get("type", "") or "none"
    source = m.get("source", "") or mtype
    is_bind = mtype == "bind" or "bind" in options or "rbind" in options
    flags = [o for o in options if o not in _DROP_OPTIONS]
    if is_bind:
        mtype = "none"
        flags.insert(0, "rbind" if "rbind" in options else "bind")
        flags.append("create=dir" if params.source_is_dir(source) else "create=file")
    else:
        flags.append("create=dir")
    return " ".join([_fstab_escape(source), _fstab_escape(dest.lstrip("/")), mtype,
                     ",".join(flags), "0", "0"])


def _fstab_escape(field: str) -> str:
    # getmntent(3) decodes \040 (space), \011 (tab), \012 (newline) and \134 (backslash).
    out = field.replace("\\", "\\134")
    return out.replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")


def configure_hooks(params: Params) -> list[Line]:
    # start-host runs on the host after the container is set up and before its init runs, with
    # LXC_PID in the environment (man lxc.container.conf; DESIGN.md section 5.1): the gate that
    # holds the OCI "created" state. LXC runs the hook string through /bin/sh with the arguments
    # "<name> lxc start-host" appended (measured).
    return [("lxc.hook.start-host", params.gate)]
