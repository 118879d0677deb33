"""Filesystem settings LXC has no key for, rendered as ``lxc.hook.mount`` / ``lxc.hook.autodev``
lines: sysctls and domainname, a read-only root, the spec's flags for /proc, /sys and /dev,
masked and read-only paths (shell one-liners), and device nodes (made by
:mod:`runtime.lxc.rootpath`, which resolves each path inside the rootfs).

Why hooks (``man lxc.container.conf``, CONTAINER HOOKS): the mount hook runs in the container's
new namespaces after LXC mounted the rootfs, ``lxc.mount.auto`` and ``lxc.mount.entry``, and
before ``pivot_root``, with the rootfs at ``$LXC_ROOTFS_MOUNT`` and the host's tools still
visible. Measured on LXC 5.0.2:

- ``lxc.rootfs.options = ro`` makes the mount entries' ``create=dir`` fail with EROFS, but a
  ``mount -o remount,bind,ro $LXC_ROOTFS_MOUNT`` in the mount hook, after the mount points
  exist, gives a read-only root (``touch /foo`` → "Read-only file system");
- ``lxc.sysctl.*`` is applied after the hook, so it fails once ``/proc/sys`` is read-only (as
  ``readonlyPaths`` asks); writing ``$LXC_ROOTFS_MOUNT/proc/sys/...`` from the hook works and
  changes only the container's namespace (``/proc/sys/net`` resolves to the writer's netns);
- the autodev hook runs after ``/dev`` is a tmpfs, so ``mknod`` there creates device nodes;
- both run with the host's root directory: a path through an image's symlink must be resolved
  inside ``$LXC_ROOTFS_MOUNT`` (:mod:`runtime.lxc.rootpath`), never by the shell.

The mount hook is ``/bin/sh -c '<script>' <tag>``: LXC runs the hook string through ``sh -c``
with ``<name> lxc mount`` appended, which become the script's ``$1``… and are ignored.
``set -e`` makes any failure abort the container's setup. The autodev hook is
``rootpath.py devices <json>`` (the appended words are ignored there too). Pure: returns text.
"""

from __future__ import annotations

import json
import posixpath
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from runtime.lxc import rootpath

Line = tuple[str, str]

#: Nodes LXC's autodev makes itself (lxc.autodev); an OCI device of the same path is skipped.
_AUTODEV = frozenset({"/dev/null", "/dev/zero", "/dev/full", "/dev/urandom", "/dev/random",
                      "/dev/tty"})
#: Prefixes of namespaced sysctls and the namespace each needs (runc's list, config-linux.md
#: "Sysctl": "the runtime MUST ... only namespaced sysctls").
IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                         "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                         "kernel.shm_rmid_forced"})

_FUNCTIONS = (
    'p() { if [ -e "$r$1" ]; then mount --bind "$r$1" "$r$1" && '
    'mount -o remount,bind,ro "$r$1"; fi; }'
)


def _fstab(path: str) -> str:
    """A path as an fstab field (getmntent(3) decodes these octal escapes)."""
    return (path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")
            .replace("\n", "\\012"))


#: Mount flags LXC gives the file systems it mounts itself (measured on LXC 5.0.2 in
#: /proc/self/mountinfo: ``proc:rw`` nosuid,nodev,noexec; ``sys:ro`` only ro, ``sys:rw``
#: none; the autodev tmpfs none), as (ro, nosuid, nodev, noexec).
_SECURITY_FLAGS = ("ro", "nosuid", "nodev", "noexec")
_LXC_FLAGS = {"/proc": {"nosuid", "nodev", "noexec"}, "/sys": {"ro"}, "/dev": set[str]()}
_CLEARS = {"rw": "ro", "suid": "nosuid", "dev": "nodev", "exec": "noexec"}
_ATIME = ("strictatime", "noatime", "relatime", "nodiratime", "atime", "diratime")


def security_flags(options: list[str]) -> set[str]:
    """The ro/nosuid/nodev/noexec a mount's options ask for (a later "rw", "suid"… clears
    an earlier one, as mount(8) reads them)."""
    flags: set[str] = set()
    for opt in options:
        if opt in _SECURITY_FLAGS:
            flags.add(opt)
        elif opt in _CLEARS:
            flags.discard(_CLEARS[opt])
    return flags


def read_only(options: list[str]) -> bool:
    return "ro" in security_flags(options)


def special_remounts(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, mount options) giving /proc, /sys and /dev the spec's ro, nosuid, nodev and
    noexec where LXC's own mounts of them differ (containerd's /sys asks nosuid,noexec,nodev,ro,
    LXC mounts it ro only; its /dev asks nosuid, LXC's autodev tmpfs has none). Applied by a
    bind remount in the mount hook, which changes only the mount's flags (mount(8),
    "remount,bind"): the filesystem's own options (the tmpfs size) stay LXC's."""
    found = []
    for m in spec.get("mounts") or []:
        dest = posixpath.normpath(m.get("destination", ""))
        if dest not in _LXC_FLAGS:
            continue
        options = m.get("options") or []
        wanted = security_flags(options)
        lxc = set(_LXC_FLAGS[dest])
        if dest == "/sys" and "ro" not in wanted:
            lxc.discard("ro")  # sys:rw (config.configure_auto_mounts)
        if wanted == lxc:
            continue
        opts = ["ro" if "ro" in wanted else "rw"]
        opts += [f for f in _SECURITY_FLAGS[1:] if f in wanted]
        opts += [o for o in options if o in _ATIME]
        found.append((dest, ",".join(opts)))
    return found


def sysctl_namespace(key: str) -> str | None:
    """The namespace a sysctl belongs to ("net", "ipc", "uts"), None if it is host-wide."""
    dotted = key.replace("/", ".")
    if dotted.startswith("net."):
        return "net"
    if dotted in IPC_SYSCTLS or dotted.startswith("fs.mqueue."):
        return "ipc"
    if dotted in ("kernel.hostname", "kernel.domainname"):
        return "uts"
    return None


def path_entries(spec: dict[str, Any], rootfs_mount: str, *, ro_in_hook: bool,
                 path_kind: Callable[[str], str] | None = None,
                 resolved: Mapping[str, str] | None = None) -> list[Line]:
    """Masked and read-only paths as ``lxc.mount.entry`` lines, which LXC applies itself after
    the automatic /proc and /sys mounts: no process per path (the shell hook with one ``mount``
    per path cost ~35 ms per container, measured).

    - A masked path gets two ``optional`` entries, a read-only empty tmpfs (fits a directory)
      and a bind of /dev/null (fits a file); the kernel refuses the one that does not fit and
      ``optional`` skips it, as it skips a path that does not exist (runc masks the same way).
    - A read-only path is bound onto itself read-only; its source names the container's path
      through ``lxc.rootfs.mount``, where LXC has the rootfs mounted at that moment.

    ``path_kind`` ("dir", "file", "special" or "" for absent) chooses the one entry that fits
    instead (a "special" path, a FIFO, socket or device, is left to :func:`mount_hook`: LXC
    opens a mount entry's target, and opening a FIFO blocks), for
    containers CRIU may dump: LXC declares every bind entry to CRIU as an external mount keyed
    by its target, so the unused /dev/null bind of a masked directory made the restore bind
    /dev/null onto that directory ("Can't bind-mount at …/proc/acpi: Not a directory",
    measured). /proc and /sys hold the same kinds of entries inside a container as on its host
    (same kernel).

    ``resolved`` maps each path to where it leads inside the rootfs
    (:mod:`runtime.lxc.mountpoints`): a path in the image may be a symlink, and LXC would
    otherwise skip it as ``optional`` (its target check refuses symlinks), leaving it unmasked.
    """
    linux = spec.get("linux") or {}
    resolved = resolved or {}
    lines: list[Line] = []
    for path in linux.get("maskedPaths") or []:
        rel = _fstab(resolved.get(path, path).lstrip("/"))
        kind = path_kind(path) if path_kind is not None else "either"
        if kind in ("dir", "either"):
            lines.append(("lxc.mount.entry", f"tmpfs {rel} tmpfs "
                          "ro,nosuid,nodev,noexec,size=0,optional 0 0"))
        if kind in ("file", "either"):
            lines.append(("lxc.mount.entry", f"/dev/null {rel} none bind,optional 0 0"))
    if not ro_in_hook:
        for path in linux.get("readonlyPaths") or []:
            rel = _fstab(resolved.get(path, path).lstrip("/"))
            source = _fstab(rootfs_mount.rstrip("/")) + "/" + rel
            lines.append(("lxc.mount.entry", f"{source} {rel} none bind,ro,optional 0 0"))
    return lines


def mount_hook(spec: dict[str, Any], sysctls: dict[str, str], *,
               ro_in_hook: bool | None = None,
               resolved: Mapping[str, str] | None = None,
               path_kind: Callable[[str], str] | None = None) -> list[Line]:
    """The ``lxc.hook.mount`` line, or none when nothing needs it. ``sysctls`` already
    includes ``kernel.domainname`` when the spec sets a domainname. ``ro_in_hook`` (default:
    when there are sysctls) makes the read-only paths here instead of by mount entries."""
    if ro_in_hook is None:
        ro_in_hook = bool(sysctls)
    linux = spec.get("linux") or {}
    steps: list[str] = []
    for key, value in sysctls.items():
        path = "$r/proc/sys/" + key.replace(".", "/") if "/" not in key else \
            "$r/proc/sys/" + key
        steps.append(f'printf %s {shlex.quote(value)} > "{path}"')
    # A mount entry cannot do this: LXC 5 ignores its "remount" option and skips the
    # remount of a bind that is not ro (measured: /dev stayed without nosuid).
    steps += [f'mount -o remount,bind,{opts} "$r{path}"'
              for path, opts in special_remounts(spec)]
    if (spec.get("root") or {}).get("readonly"):
        steps.append('mount -o remount,bind,ro "$r"')
    # linux.rootfsPropagation is the in-container init's, after the pivot (set here, before
    # it, "shared" made LXC's pivot_root fail and LXC remounted the root shared afterwards).
    if ro_in_hook:
        # /proc/sys must stay writable until the sysctls are written (above), so read-only
        # paths are made here, after them, instead of by mount entries (path_entries). Also
        # for containers CRIU may dump: LXC declares mount entries to CRIU as external
        # mounts, and a read-only path's source (under lxc.rootfs.mount) does not exist at
        # restore ("Can't bind-mount at …/proc/bus: No such file or directory", measured);
        # binds made here are the container's own, which CRIU dumps and restores itself.
        # Resolved inside the rootfs: the hook's `mount` would follow an image's symlink
        # the host's way.
        steps += [f"p {shlex.quote((resolved or {}).get(p, p))}"
                  for p in linux.get("readonlyPaths") or []]
    if path_kind is not None:
        # mount(8) binds onto a FIFO without opening it (measured); LXC's entries open it.
        steps += [f'mount --bind /dev/null "$r"{shlex.quote((resolved or {}).get(p, p))}'
                  for p in linux.get("maskedPaths") or [] if path_kind(p) == "special"]
    if not steps:
        return []
    script = "set -e; r=$LXC_ROOTFS_MOUNT; " + _FUNCTIONS + "; " + "; ".join(steps)
    return [("lxc.hook.mount", f"/bin/sh -c {shlex.quote(script)} lxcri-mount")]


def path_helper(python: str = sys.executable) -> str:
    """The shell words running :mod:`runtime.lxc.rootpath` as a script: isolated (``-I``: no
    environment, no user site) and without ``site`` (``-S``), which it does not need."""
    return f"{shlex.quote(python)} -I -S {shlex.quote(str(Path(rootpath.__file__)))}"


def autodev_hook(spec: dict[str, Any], helper: str | None = None) -> list[Line]:
    """The ``lxc.hook.autodev`` line creating ``linux.devices`` (config-linux.md "Devices").

    The hook runs before the root switch, as root with the host's root directory, so a
    device path through an image's symlink would reach the host (issue 12). The nodes are
    made by :func:`runtime.lxc.rootpath.make_devices`, which resolves each path inside
    ``$LXC_ROOTFS_MOUNT`` like runc: a symlink leads to its in-root target, missing
    directories are made in the root, an existing node is kept. LXC runs the hook string
    with ``sh -c`` and appends ``<name> lxc autodev``, which the script ignores. The JSON is
    ASCII (``ensure_ascii``) and shell-quoted, so no byte of a device path is interpreted.
    """
    devices = []
    for d in (spec.get("linux") or {}).get("devices") or []:
        if d["path"] in _AUTODEV:
            continue
        devices.append({k: d[k] for k in ("path", "type", "major", "minor", "fileMode", "uid",
                                           "gid") if k in d})
    if not devices:
        return []
    payload = json.dumps(devices, ensure_ascii=True, separators=(",", ":"))
    return [("lxc.hook.autodev",
             f"{helper or path_helper()} devices {shlex.quote(payload)}")]
