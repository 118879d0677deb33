"""``resolv.conf`` and ``hosts`` for a container with a shim-managed network.

The files are written into the container's state directory and bind-mounted read-only over
``/etc/resolv.conf`` and ``/etc/hosts`` through the spec's ``mounts`` (what containerd's CRI
plugin does for pods), so the image stays untouched. Rendering is pure; writing is stdlib.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

RESOLV = "resolv.conf"
HOSTS = "hosts"
#: resolv.conf(5): the resolver reads at most MAXNS = 3 nameservers and 6 search domains
#: (glibc resolv.h; musl and busybox follow the same limits).
MAXNS = 3
MAXDNSRCH = 6


def render_resolv(nameservers: tuple[str, ...], search: tuple[str, ...],
                  options: tuple[str, ...]) -> str:
    lines = [f"nameserver {ns}" for ns in nameservers[:MAXNS]]
    if search:
        lines.append("search " + " ".join(search[:MAXDNSRCH]))
    if options:
        lines.append("options " + " ".join(options))
    return "".join(line + "\n" for line in lines)


def render_hosts(address: ipaddress.IPv4Address, hostname: str) -> str:
    # The loopback lines every image expects (Debian's netbase default), then this container.
    return ("127.0.0.1\tlocalhost\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{address}\t{hostname}\n")


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = directory / f".{name}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o644)  # readable by the container's non-root users
    os.replace(tmp, path)
    return path


def bind_mounts(spec: dict[str, Any], files: dict[str, Path]) -> dict[str, Any]:
    """A copy of ``spec`` whose ``mounts`` bind ``files`` (destination → source) read-only,
    replacing mounts the spec had at those destinations."""
    mounts = [m for m in spec.get("mounts", []) or []
              if not (isinstance(m, dict) and m.get("destination") in files)]
    for dest, source in files.items():
        mounts.append({"destination": dest, "type": "bind", "source": str(source),
                       "options": ["rbind", "ro"]})
    return {**spec, "mounts": mounts}
