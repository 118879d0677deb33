"""containerd's shim command line: Go-style flags before one action word (shim-protocol.md 2.3).

``<shim> -namespace NS -address A -publish-binary B -id ID [-bundle DIR] [-debug] start|delete``.
Go accepts ``-name value``, ``--name value`` and ``-name=value``; unknown flags are tolerated
(containerd adds flags between versions). Standard library only: ``start`` and ``delete`` must be
quick to import.
"""

from __future__ import annotations

BOOLEAN = frozenset({"debug", "v", "version", "info"})


class Flags:
    """The parsed command line (a plain class: ``dataclasses`` costs ~7 ms to import, paid by
    every ``start`` and ``delete``)."""

    def __init__(self) -> None:
        self.namespace = ""
        self.address = ""
        self.publish_binary = ""
        self.id = ""
        self.bundle = ""
        self.debug = False
        self.version = False
        self.info = False
        self.action = ""
        self.unknown: dict[str, str] = {}

    def to_dict(self) -> dict[str, object]:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Flags:
        flags = cls()
        for key, value in data.items():
            if hasattr(flags, key):
                setattr(flags, key, value)
        return flags


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
