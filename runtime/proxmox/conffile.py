"""Raw ``lxc.*`` keys into ``/etc/pve/lxc/<vmid>.conf`` (as root on the node).

The API has no parameter for them; pve-docs ``pct.adoc`` ("Configuration") says they are set by
editing the file, which pve-container parses (``PVE/LXC/Config.pm`` → ``parse_pct_config``) and
appends to the generated LXC config at every start (``PVE/LXC.pm`` → ``update_lxc_config``).
Keys are limited to ``$valid_lxc_conf_keys`` there: this backend writes ``lxc.mount.entry``
(the shim's directory, stdio, bind mounts, masked and read-only paths) and
``lxc.rootfs.mount`` (the source of the read-only paths' binds) only;
``lxc.init.uid/gid/cwd`` and ``lxc.cap.drop/keep`` are accepted for CTs made before the in-CT
init applied them. They go before the first
``[snapshot]`` section, through the choke point (runtime.proxmox.ctconfig.clean), and the
file is replaced atomically (PVE's own ``PVE::Tools::file_set_contents`` writes a temporary
file and renames it, also on pmxcfs).
"""

from __future__ import annotations

import os
from pathlib import Path

from runtime import errdefs
from runtime.proxmox.ctconfig import clean

ALLOWED = ("lxc.mount.entry", "lxc.rootfs.mount", "lxc.init.uid", "lxc.init.gid",
           "lxc.init.cwd", "lxc.cap.drop", "lxc.cap.keep")


def add_raw(conf_dir: Path, vmid: int, raw: list[tuple[str, str]]) -> None:
    path = conf_dir / f"{vmid}.conf"
    try:
        text = path.read_text()
    except OSError as exc:
        raise errdefs.NotFound(f"CT {vmid}: {path}: {exc.strerror}") from None
    lines = []
    for key, value in raw:
        if key not in ALLOWED:
            raise errdefs.InvalidArgument(f"CT {vmid}: raw key {key} is not one this backend "
                                          "writes")
        lines.append(f"{key}: {clean(key, value)}\n")
    head, sep, tail = text.partition("\n[")
    if not head.endswith("\n"):
        head += "\n"
    new = head + "".join(lines) + (("\n[" if sep else "") + tail if sep else "")
    tmp = path.with_name(f".{vmid}.conf.lxcri.{os.getpid()}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
