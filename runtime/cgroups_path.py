"""``linux.cgroupsPath`` → the container's cgroup, relative to each hierarchy's root.

containerd writes the field in one of two forms (config-linux.md "Cgroups path"; containerd's
CRI plugin picks by the cgroup driver):

- a **cgroupfs path**: ``/kubepods/burstable/pod<uid>/<id>`` (absolute: from the root of every
  hierarchy), or a relative one, which the spec lets the runtime place; like runc's cgroupfs
  driver, a relative path is taken below the runtime's own cgroup (here the shim daemon's);
- systemd's **``slice:prefix:name``** (kubeadm's default driver): runc's systemd driver asks
  systemd for a transient scope ``<prefix>-<name>.scope`` in the slice, whose cgroup is the
  slice hierarchy spelled out (``a-b-c.slice`` → ``a.slice/a-b.slice/a-b-c.slice``; systemd.slice
  (5)). This module maps the value to that same directory, which LXC makes
  (``lxc.cgroup.dir.container``), so the container lands where systemd and kubelet look for it.
  Where systemd runs (``/run/systemd/system``, sd_booted(3)), runtime.systemd_scope then
  registers the directory as that transient scope unit, with the init's PID, ``Delegate=yes``
  and the spec's limits as properties, as runc does; delete stops it. On a host without
  systemd (the development host) it stays a plain cgroupfs path and nothing else happens. An
  empty slice is ``system.slice`` (runc's default); a name ending in ``.slice`` is the unit
  itself (a plain directory here: runc would make a slice unit), and an empty prefix still
  gives ``-<name>.scope``, as in runc. Measured under systemd 257 in
  tests/kernel/test_pve9_systemd_cgroups.py, recorded in docs/pve9-differences.md.

Standard library only, pure: the daemon's own cgroup is passed in.
"""

from __future__ import annotations

import re

from runtime.errdefs import InvalidArgument

#: What a slice or scope name may contain (systemd.unit(5): ASCII letters, digits, ":", "-",
#: "_", ".", "\"; the ":" and "\" are refused here, they have no use in a cgroup path).
_UNIT = re.compile(r"^[A-Za-z0-9_.@-]+$")
_FIELD = "linux.cgroupsPath"


def is_systemd_form(value: str) -> bool:
    """``slice:prefix:name``: three fields, the first empty or a slice (a cgroupfs path
    rarely contains ":", and never starts with a slice name followed by one)."""
    parts = value.split(":")
    return (len(parts) == 3 and not value.startswith("/")
            and (parts[0] == "" or parts[0].endswith(".slice")))


def resolve(value: object, own_cgroup: str = "/") -> str:
    """The container's cgroup below the hierarchies' roots, without a leading ``/`` (the
    form ``lxc.cgroup.dir.container`` takes), or "" when the spec sets none."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{_FIELD}: must be a string")
    if "\n" in value or "\0" in value:
        raise InvalidArgument(f"{_FIELD}: must not contain a newline or NUL")
    if is_systemd_form(value):
        path = systemd_path(value)
    elif value.startswith("/"):
        path = value
    else:
        path = f"{own_cgroup.rstrip('/')}/{value}"
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"{_FIELD}: {value!r} must not contain '..'")
    if not parts:
        raise InvalidArgument(f"{_FIELD}: {value!r} names the root cgroup; a container needs "
                              "its own")
    return "/".join(parts)


def systemd_path(value: str) -> str:
    """``slice:prefix:name`` → the cgroup path systemd gives that scope."""
    slice_, unit = systemd_unit(value)
    return f"{expand_slice(slice_)}/{unit}"


def systemd_unit(value: str) -> tuple[str, str]:
    """``slice:prefix:name`` → ``(slice, unit)``, both checked unit names (the slice
    ``system.slice`` when empty, as in runc)."""
    slice_, prefix, name = value.split(":")
    for what, part in (("slice", slice_), ("prefix", prefix), ("name", name)):
        if part and not _UNIT.match(part):
            raise InvalidArgument(f"{_FIELD}: {what} {part!r} is not a valid unit name")
    if not name:
        raise InvalidArgument(f"{_FIELD}: {value!r}: the name in slice:prefix:name is empty")
    slice_ = slice_ or "system.slice"
    expand_slice(slice_)  # checks the slice's name
    # runc's getUnitName (libcontainer/cgroups/systemd/common.go): "<prefix>-<name>.scope"
    # even for an empty prefix ("-<name>.scope"; runc 1.1.15 under systemd 257 puts
    # "system.slice::x" in /system.slice/-x.scope, measured in the pve9 guest).
    unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope"
    return slice_, unit


def expand_slice(slice_: str) -> str:
    """``a-b-c.slice`` → ``/a.slice/a-b.slice/a-b-c.slice``; the root slice ``-.slice`` is
    ``/`` (systemd.slice(5): each dash adds a level)."""
    if not slice_.endswith(".slice") or "/" in slice_:
        raise InvalidArgument(f"{_FIELD}: {slice_!r} is not a slice name")
    if slice_ == "-.slice":
        return ""
    stem = slice_[: -len(".slice")]
    words = stem.split("-")
    if not stem or any(w == "" for w in words):
        raise InvalidArgument(f"{_FIELD}: {slice_!r} is not a valid slice name")
    return "".join("/" + "-".join(words[: i + 1]) + ".slice" for i in range(len(words)))
