"""containerd's shim command line: Go-style flags before one action word (shim-protocol.md 2.3).

``<shim> -namespace NS -address A -publish-binary B -id ID [-bundle DIR] [-debug] start|delete``.
Go accepts ``-name value``, ``--name value`` and ``-name=value``; unknown flags are tolerated
(containerd adds flags between versions). Standard library only: ``start`` and ``delete`` must be
quick to import.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BOOLEAN = frozenset({"debug", "v", "version", "info"})


@dataclass
class Flags:
    namespace: str = ""
    address: str = ""
    publish_binary: str = ""
    id: str = ""
    bundle: str = ""
    debug: bool = False
    version: bool = False
    info: bool = False
    action: str = ""
    unknown: dict[str, str] = field(default_factory=dict)


def parse(argv: list[str]) -> Flags:
    flags = Flags()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            if not flags.action and arg not in ("-", "--"):
                flags.action = arg
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if name in BOOLEAN:
            on = value.lower() not in ("false", "0") if eq else True
            setattr(flags, "version" if name == "v" else name, on)
            continue
        if not eq:
            if i >= len(argv):
                raise SystemExit(f"flag needs an argument: -{name}")
            value = argv[i]
            i += 1
        key = name.replace("-", "_")
        if key in ("namespace", "address", "publish_binary", "id", "bundle"):
            setattr(flags, key, value)
        else:
            flags.unknown[name] = value
    return flags
