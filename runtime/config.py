"""The operator's configuration file and per-container overrides.

The shim reads ``/etc/proxmox-lxcri/config.toml`` (or ``$PROXMOX_LXCRI_CONFIG``); a task's
runtime options may name another file (containerd's ``runtimeoptions.v1.Options.config_path``,
which ``ctr run --runtime-config-path`` sets, or an inline TOML ``config_body`` from the CRI
``options`` table). Each package parses its own section (``[storage]``, ``[network]``, …) from
the raw mapping returned here, so this module stays a leaf. Per-container annotations under
``lxcri.proxmox.io/`` override settings only where the operator allows it (``[annotations]
allow = [...]``). Standard library only.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from runtime.errdefs import InvalidArgument

DEFAULT_PATH = Path("/etc/proxmox-lxcri/config.toml")
ANNOTATION_PREFIX = "lxcri.proxmox.io/"


def default_path() -> Path:
    return Path(os.environ.get("PROXMOX_LXCRI_CONFIG") or DEFAULT_PATH)


def load(path: Path | None = None, body: bytes | None = None) -> dict[str, Any]:
    """The raw configuration: ``body`` (inline TOML) if given, else the file at ``path`` (or the
    default path). A missing default file means defaults; a missing *named* file is an error."""
    if body:
        return _parse(body.decode("utf-8", "replace"), "runtime options config_body")
    explicit = path is not None
    path = path or default_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise InvalidArgument(f"configuration file {path} does not exist") from None
        return {}
    except OSError as exc:
        raise InvalidArgument(f"configuration file {path}: {exc.strerror}") from None
    return _parse(text, str(path))


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"{where}: invalid TOML: {exc}") from None


def section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name, {})
    if not isinstance(value, dict):
        raise InvalidArgument(f"configuration: [{name}] must be a table")
    return value


def overrides(config: dict[str, Any], annotations: dict[str, str]) -> dict[str, str]:
    """The ``lxcri.proxmox.io/<key>`` annotations the operator allows, keyed by ``<key>``.

    An annotation the configuration does not allow is an error that names it, never silently
    ignored: a user who asked for a quota must learn it was not applied.
    """
    allowed = set(section(config, "annotations").get("allow", DEFAULT_ALLOWED))
    out: dict[str, str] = {}
    for key, value in annotations.items():
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        name = key.removeprefix(ANNOTATION_PREFIX)
        if name not in allowed:
            raise InvalidArgument(f"annotation {key}: not allowed by the operator's "
                                  f"configuration ([annotations] allow)")
        out[name] = value
    return out


#: Overrides allowed when the configuration says nothing.
DEFAULT_ALLOWED = ("quota", "reservation", "network", "bridge", "vlan", "ip", "dns",
                   "dns-search", "hostname", "mtu", "checkpoint-keep")
