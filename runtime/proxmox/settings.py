"""``[backend]`` and ``[proxmox]`` of config.toml (docs/configuration.md, docs/proxmox.md).

::

    [backend]
    type = "proxmox"            # or "lxc" (the default)

    [proxmox]
    url = "https://pve1:8006"   # default: https://<node>:8006, the node itself
    node = "pve1"               # default: this host's name
    token_id = "root@pam!lxcri"
    token_secret_file = "/etc/proxmox-lxcri/pve-token"   # root-only (0600/0400, owner root)
    ca_file = "/etc/pve/pve-root-ca.pem"                 # the cluster CA PVE installs
    storage = "local-zfs"       # rootfs volumes
    template_storage = "local"  # vztmpl uploads of image roots (dir storage)
    bridge = "vmbr0"
    vmid_range = [100000, 199999]
    tags = ["containerd"]
    conf_dir = "/etc/pve/lxc"   # where the CT configs are (raw lxc.* keys are written there)
    lxcpath = "/var/lib/lxc"    # where PVE generates the LXC configs (lxc-attach -P)
    checkpoint_keep = 3         # checkpoints kept per CT
    image_keep = 5              # unused image templates kept (runtime/proxmox/images.py)

The key names ``url``, ``token_id``, ``token_secret_file`` and ``ca_file`` are also read by
``proxmox-lxcri health`` (shim/health.py). The secret itself is read by :mod:`.api` only.
Standard library only (the ``delete`` action imports it).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import errdefs

DEFAULT_CA = "/etc/pve/pve-root-ca.pem"
_STORAGE = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$", re.I)  # pve-storage-id
_BRIDGE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,14}$")
_TAG = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$", re.I)  # pve-tag
_TOKEN_ID = re.compile(r"^[^\s!@=]+@[^\s!@=]+![A-Za-z][A-Za-z0-9._\-]*$")


def backend_type(config: dict[str, Any]) -> str:
    """``[backend] type``: "lxc" unless the configuration says otherwise."""
    section = config.get("backend") or {}
    if not isinstance(section, dict):
        raise errdefs.InvalidArgument("configuration: [backend] must be a table")
    value = section.get("type", "lxc")
    if value not in ("lxc", "proxmox"):
        raise errdefs.InvalidArgument(
            f"configuration: [backend] type = {value!r}: must be \"lxc\" or \"proxmox\"")
    return str(value)


@dataclass(frozen=True)
class ProxmoxSettings:
    url: str
    node: str
    token_id: str
    token_secret_file: Path
    ca_file: str
    storage: str = "local-zfs"
    template_storage: str = "local"
    bridge: str = "vmbr0"
    vmid_lower: int = 100
    vmid_upper: int = 999999999
    tags: tuple[str, ...] = ("containerd",)
    conf_dir: Path = Path("/etc/pve/lxc")
    lxcpath: Path = Path("/var/lib/lxc")
    #: GiB of each image template's rootfs volume (its refquota, inherited by the clones).
    rootfs_size: int = 8
    #: Checkpoints (CT snapshots ``checkpoint-<unix>``) kept per CT, like [storage]'s.
    checkpoint_keep: int = 3
    #: Unused image templates (no linked clone) kept, the most recently used ones, when a new
    #: template is made (runtime/proxmox/images.py); templates in use always stay.
    image_keep: int = 5
    #: Seconds for one HTTP request, and for one task (UPID) to end.
    request_timeout: float = 30.0
    task_timeout: float = 300.0


def _str(section: dict[str, Any], key: str, default: str, pattern: re.Pattern[str] | None = None
         ) -> str:
    value = section.get(key, default)
    if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
        raise errdefs.InvalidArgument(f"configuration: [proxmox] {key} must be a one-line string")
    if pattern is not None and not pattern.match(value):
        raise errdefs.InvalidArgument(f"configuration: [proxmox] {key} = {value!r} is not valid")
    return value


def parse(config: dict[str, Any]) -> ProxmoxSettings:
    """The ``[proxmox]`` section, checked; InvalidArgument names the bad key."""
    section = config.get("proxmox") or {}
    if not isinstance(section, dict):
        raise errdefs.InvalidArgument("configuration: [proxmox] must be a table")
    node = _str(section, "node", socket.gethostname().split(".")[0],
                re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?$"))
    url = _str(section, "url", f"https://{node}:8006").rstrip("/")
    if not url.startswith("https://"):
        raise errdefs.InvalidArgument(f"configuration: [proxmox] url = {url!r}: must be https://")
    token_id = _str(section, "token_id", "", _TOKEN_ID)
    secret_file = _str(section, "token_secret_file", "")
    if not secret_file.startswith("/"):
        raise errdefs.InvalidArgument(
            "configuration: [proxmox] token_secret_file must be an absolute path")
    vr = section.get("vmid_range", [100, 999999999])
    if (not isinstance(vr, list) or len(vr) != 2 or not all(isinstance(v, int) for v in vr)
            or not 100 <= vr[0] <= vr[1] <= 999999999):
        raise errdefs.InvalidArgument("configuration: [proxmox] vmid_range must be "
                                      "[lower, upper] with 100 <= lower <= upper <= 999999999")
    tags = section.get("tags", ["containerd"])
    if not isinstance(tags, list) or not all(isinstance(t, str) and _TAG.match(t) for t in tags):
        raise errdefs.InvalidArgument("configuration: [proxmox] tags must be a list of PVE tags")
    size = section.get("rootfs_size", 8)
    if not isinstance(size, int) or not 1 <= size <= 131072:
        raise errdefs.InvalidArgument("configuration: [proxmox] rootfs_size must be 1..131072 "
                                      "(GiB)")
    keep = section.get("checkpoint_keep", 3)
    if not isinstance(keep, int) or keep < 1:
        raise errdefs.InvalidArgument("configuration: [proxmox] checkpoint_keep must be >= 1")
    image_keep = section.get("image_keep", 5)
    if not isinstance(image_keep, int) or isinstance(image_keep, bool) or image_keep < 0:
        raise errdefs.InvalidArgument("configuration: [proxmox] image_keep must be >= 0")
    timeouts = {}
    for key, default in (("request_timeout", 30.0), ("task_timeout", 300.0)):
        v = section.get(key, default)
        if not isinstance(v, (int, float)) or v <= 0:
            raise errdefs.InvalidArgument(f"configuration: [proxmox] {key} must be > 0")
        timeouts[key] = float(v)
    return ProxmoxSettings(
        url=url, node=node, token_id=token_id, token_secret_file=Path(secret_file),
        ca_file=_str(section, "ca_file", DEFAULT_CA),
        storage=_str(section, "storage", "local-zfs", _STORAGE),
        template_storage=_str(section, "template_storage", "local", _STORAGE),
        bridge=_str(section, "bridge", "vmbr0", _BRIDGE),
        vmid_lower=vr[0], vmid_upper=vr[1], tags=tuple(tags), rootfs_size=size,
        checkpoint_keep=keep, image_keep=image_keep,
        conf_dir=Path(_str(section, "conf_dir", "/etc/pve/lxc")),
        lxcpath=Path(_str(section, "lxcpath", "/var/lib/lxc")), **timeouts)


def read_secret(path: Path) -> str:
    """The token secret from a root-only file. The secret never appears in an error."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise errdefs.FailedPrecondition(
            f"proxmox token secret file {path}: {exc.strerror}") from None
    if st.st_uid != 0 or st.st_mode & 0o077:
        raise errdefs.FailedPrecondition(
            f"proxmox token secret file {path}: must be owned by root and not readable by "
            f"group or others (mode {st.st_mode & 0o777:04o}, owner {st.st_uid}); "
            f"chown root:root {path} && chmod 0600 {path}")
    secret = path.read_text(encoding="utf-8").strip()
    if not secret or any(c in secret for c in "\r\n\0 ="):
        raise errdefs.FailedPrecondition(f"proxmox token secret file {path}: not one token "
                                         "secret (a UUID) on one line")
    return secret
