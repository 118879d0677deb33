"""``containerd-shim-proxmox-v2``: dispatch to the short-lived actions.

Imports stay lazy: ``start`` and ``delete`` run on containerd's critical path for every task, so
they load only the standard library (DESIGN.md section 2).
"""

from __future__ import annotations

import os
import sys

VERSION = "0.1.0"


def main(argv: list[str] | None = None) -> None:
    from shim.flags import parse

    flags = parse(sys.argv[1:] if argv is None else argv)
    if flags.version:
        sys.stdout.write(f"containerd-shim-proxmox-v2:\n  Version: {VERSION}\n"
                         "  Runtime: io.containerd.proxmox.v2 (LXC backend)\n")
        raise SystemExit(0)
    if flags.action == "start":
        from shim.manager import start

        _exit(start(flags))
    if flags.action == "delete":
        from shim.delete import delete

        _exit(delete(flags))
    sys.stderr.write(f"containerd-shim-proxmox-v2: unknown action {flags.action!r} "
                     "(expected start or delete)\n")
    raise SystemExit(2)


def _exit(code: int) -> None:  # NoReturn, but `typing` costs ~7 ms to import here
    """End a finished action without the interpreter's shutdown (~1 ms of module teardown on
    containerd's critical path, measured): its output is flushed, and it holds nothing else
    that needs closing (the kernel closes the descriptors)."""
    sys.stdout.flush()
    sys.stderr.flush()
    end(code)


#: How a finished action ends: at once, in a launcher of its own; an action run by the zygote
#: for the compiled launcher reports its code to that launcher first (shim/zygote_relay.py).
end = os._exit
