"""The CT's Proxmox options and raw LXC keys from the OCI spec: the one choke point every value
written into a PVE or LXC config passes (no CR, LF or NUL; a mount path no whitespace).

Options (pve-container ``src/PVE/LXC/Config.pm`` ``$confdesc``; proxmox-api.md §4.1):

- ``hostname`` from the spec's (a dns-name), else the container id made one;
- ``memory``/``swap`` (MiB) from ``linux.resources.memory.limit``/``swap`` (OCI swap is
  memory+swap, like cgroup v1 memsw);
- ``cpulimit`` = quota/period (cores, fractions allowed), ``cores`` its ceiling, ``cpuunits``
  from shares: PVE's own mapping is cgroup v1 shares = cpuunits (``PVE::CGroup``
  ``clamp_cpu_shares``), so shares pass through, clamped to 1..10000 (the schema's range);
- ``net0``: ``name=eth0,bridge=<bridge>[,tag=<vlan>][,hwaddr=<mac>][,ip=<cidr>]``, host-managed
  so that the static IP is the host's to set (PVE 9.1, proxmox-api.md §7);
- ``unprivileged`` 1 when the spec has a user namespace (uid 0 mapped to PVE's 100000), else 0:
  like runc, a spec without one runs without one;
- ``features``: ``nesting=1`` only if the spec asks for nothing else than what nesting gives
  (none here: containers need no feature by default);
- ``tags``: the configured ones plus ``containerd`` and the pod's (sanitised);
- ``description`` naming namespace, container and pod; ``onboot=0``; ``console=0`` (the init's
  stdio is the shim's, runtime/proxmox/initdir.py); ``entrypoint`` the project's init.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from runtime import errdefs

_DNS = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?$")
_MAC = re.compile(r"^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}$")
_CIDR4 = re.compile(r"^(?:\d{1,3}\.){3}\d{1,3}/\d{1,2}$")
_TAG_BAD = re.compile(r"[^a-z0-9_\-+.]")
_BRIDGE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,14}$")
#: Mounts LXC and Proxmox make themselves for every CT (lxc.mount.auto, autodev, the
#: common.conf of the distro); the spec's copies of them are not repeated as mount entries.
_STANDARD = {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
             "/run", "/tmp"}
MiB = 1024 * 1024


def clean(what: str, value: str) -> str:
    """The choke point: a value for a config line."""
    if any(c in value for c in "\r\n\0"):
        raise errdefs.InvalidArgument(f"{what}: {value!r}: a line break or NUL cannot go "
                                      "into a Proxmox or LXC config")
    return value


def mount_path(what: str, value: str) -> str:
    """A path in an ``lxc.mount.entry`` (fstab fields are split at whitespace)."""
    clean(what, value)
    if any(c.isspace() for c in value) or not value:
        raise errdefs.InvalidArgument(f"{what}: {value!r}: whitespace in a mount path is "
                                      "not supported by the Proxmox backend")
    return value


def hostname(spec: dict[str, Any], container_id: str) -> str:
    name = spec.get("hostname") or ""
    if isinstance(name, str) and _DNS.match(name):
        return name
    made = re.sub(r"[^A-Za-z0-9\-]", "-", container_id).strip("-")[:63].strip("-")
    return made or "ct"


def tag(value: str) -> str:
    """A pve-tag from any text (lower case; other characters become ``_``)."""
    t = _TAG_BAD.sub("_", value.lower())
    return t if t and t[0] not in "-+." else "_" + t


@dataclass
class Network:
    bridge: str
    vlan: int | None = None
    mac: str | None = None
    ip: str | None = None
    gateway: str | None = None


@dataclass
class CtOptions:
    options: dict[str, Any] = field(default_factory=dict)
    #: Raw ``lxc.*`` keys (written into the CT's config file as root on the node).
    raw: list[tuple[str, str]] = field(default_factory=list)
    unprivileged: bool = False


def network(overrides: dict[str, str], default_bridge: str) -> Network:
    """net0 from the ``lxcri.proxmox.io/`` annotations the operator allows."""
    bridge = overrides.get("bridge", default_bridge)
    if not _BRIDGE.match(bridge):
        raise errdefs.InvalidArgument(f"annotation bridge: {bridge!r} is not a bridge name")
    net = Network(bridge)
    if "vlan" in overrides:
        v = overrides["vlan"]
        if not v.isdigit() or not 1 <= int(v) <= 4094:
            raise errdefs.InvalidArgument(f"annotation vlan: {v!r}: must be 1..4094")
        net.vlan = int(v)
    if "mac" in overrides:
        if not _MAC.match(overrides["mac"]):
            raise errdefs.InvalidArgument(f"annotation mac: {overrides['mac']!r}")
        net.mac = overrides["mac"].upper()
    if "ip" in overrides:
        ip, _, gw = overrides["ip"].partition(",")
        if not _CIDR4.match(ip) or (gw and not re.match(r"^(?:\d{1,3}\.){3}\d{1,3}$", gw)):
            raise errdefs.InvalidArgument(f"annotation ip: {overrides['ip']!r}: "
                                          "<a.b.c.d/len>[,<gateway>]")
        net.ip, net.gateway = ip, gw or None
    return net


def _with_lease(net: Network, lease: Any) -> Network:
    if lease is None:
        return net
    net.ip, net.gateway = lease.address, lease.gateway
    if net.vlan is None:
        net.vlan = lease.vlan
    return net


def net0(net: Network) -> str:
    parts = ["name=eth0", f"bridge={net.bridge}"]
    if net.vlan is not None:
        parts.append(f"tag={net.vlan}")
    if net.mac:
        parts.append(f"hwaddr={net.mac}")
    if net.ip:
        parts += [f"ip={net.ip}", "host-managed=1"]
        if net.gateway:
            parts.append(f"gw={net.gateway}")
    return clean("net0", ",".join(parts))


def resources(spec: dict[str, Any]) -> dict[str, Any]:
    res = ((spec.get("linux") or {}).get("resources") or {})
    out: dict[str, Any] = {}
    mem = res.get("memory") or {}
    limit = mem.get("limit")
    if isinstance(limit, int) and limit > 0:
        out["memory"] = max(16, math.ceil(limit / MiB))
        swap = mem.get("swap")
        if isinstance(swap, int) and swap >= limit:
            out["swap"] = math.ceil((swap - limit) / MiB)
        else:
            out["swap"] = 0
    cpu = res.get("cpu") or {}
    quota, period = cpu.get("quota"), cpu.get("period") or 100000
    if isinstance(quota, int) and quota > 0 and isinstance(period, int) and period > 0:
        cores = quota / period
        out["cpulimit"] = round(min(cores, 8192), 2)
        out["cores"] = max(1, min(8192, math.ceil(cores)))
    shares = cpu.get("shares")
    if isinstance(shares, int) and shares > 0:
        out["cpuunits"] = max(1, min(10000, shares))
    return out


#: An unprivileged CT's id mapping, the only one Proxmox generates (pve-container ``LXC.pm``
#: → ``update_lxc_config``: ``lxc.idmap = u 0 100000 65536`` and ``g …``).
PVE_IDMAP = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def user_namespace(spec: dict[str, Any]) -> bool:
    """Whether the CT is unprivileged: a spec with a user namespace. Its mappings, if it gives
    any, must be Proxmox's: others would leave the image's files owned by ids the program
    does not have (another mapping needs raw ``lxc.idmap`` keys, not done)."""
    linux = spec.get("linux") or {}
    userns = any(ns.get("type") == "user" for ns in linux.get("namespaces") or []
                 if isinstance(ns, dict))
    if userns:
        for key in ("uidMappings", "gidMappings"):
            given = linux.get(key)
            if given and [{k: m.get(k) for k in ("containerID", "hostID", "size")}
                          for m in given if isinstance(m, dict)] != PVE_IDMAP:
                raise errdefs.InvalidArgument(
                    f"linux.{key}: {given!r}: the Proxmox backend runs a user namespace as an "
                    "unprivileged CT, whose only mapping is Proxmox's 0:100000:65536")
    return userns


def bind_mounts(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """The spec's bind mounts as raw ``lxc.mount.entry`` keys (root@pam only through the
    API, so written into the config file on the node: docs/proxmox.md)."""
    out: list[tuple[str, str]] = []
    for i, m in enumerate(spec.get("mounts") or []):
        dest = m.get("destination", "")
        options = [o for o in m.get("options") or [] if isinstance(o, str)]
        is_bind = m.get("type") == "bind" or "bind" in options or "rbind" in options
        if dest in _STANDARD or not is_bind:
            continue
        src = mount_path(f"mounts[{i}].source", str(m.get("source", "")))
        dst = mount_path(f"mounts[{i}].destination", str(dest)).lstrip("/")
        import os
        kind = "dir" if os.path.isdir(src) else "file"
        opts = ["rbind" if "rbind" in options else "bind", f"create={kind}"]
        if "ro" in options:
            opts.append("ro")
        out.append(("lxc.mount.entry", f"{src} {dst} none {','.join(opts)} 0 0"))
    return out


def env_option(spec: dict[str, Any]) -> str:
    """``env``: NUL-separated (PVE 9.1, proxmox-api.md §7); control characters refused."""
    items = [e for e in (spec.get("process") or {}).get("env") or [] if isinstance(e, str)]
    for e in items:
        if any(ord(c) < 32 and c != "\t" for c in e):
            raise errdefs.InvalidArgument(f"process.env: {e.split('=', 1)[0]!r}: control "
                                          "characters cannot go into a Proxmox CT's env")
    return "\0".join(items)


def build(spec: dict[str, Any], *, namespace: str, container_id: str,
          overrides: dict[str, str], default_bridge: str, tags: tuple[str, ...],
          entrypoint: str, lease: Any = None) -> CtOptions:
    """``lease``: net0's address from the project's IPAM (runtime.proxmox.address)."""
    annotations = spec.get("annotations") or {}
    pod = annotations.get("io.kubernetes.cri.sandbox-name") or ""
    pod_ns = annotations.get("io.kubernetes.cri.sandbox-namespace") or ""
    name = overrides.get("hostname")
    if name is not None and not _DNS.match(name):
        raise errdefs.InvalidArgument(f"annotation hostname: {name!r} is not a DNS name")
    opts: dict[str, Any] = {
        "hostname": name or hostname(spec, container_id),
        "onboot": False,
        "console": False,
        "tty": 0,
        "entrypoint": clean("entrypoint", entrypoint),
        "net0": net0(_with_lease(network({k: v for k, v in overrides.items()
                                           if not (lease is not None and k == "ip")},
                                          lease.bridge if lease is not None
                                          else default_bridge), lease)),
    }
    opts.update(resources(spec))
    all_tags = list(dict.fromkeys([*tags, "containerd", *([tag(pod)] if pod else [])]))
    opts["tags"] = ";".join(all_tags)
    desc = f"containerd namespace {namespace}, container {container_id}"
    if pod:
        desc += f", pod {pod_ns + '/' if pod_ns else ''}{pod}"
    opts["description"] = clean("description", desc)
    env = env_option(spec)
    if env:
        opts["env"] = env
    # The user, cwd and capabilities are the in-CT init's (lxcri-init.c, runtime/proxmox/
    # initdir.py), as for the LXC backend: LXC applying them would confine the init itself.
    raw = bind_mounts(spec)
    # The cwd goes into the init's line-based process file.
    clean("process.cwd", str((spec.get("process") or {}).get("cwd") or "/"))
    for k, v in raw:
        clean(k, v)
    return CtOptions(opts, raw, user_namespace(spec))
