"""The ``[storage]`` section of config.toml and its per-container overrides, validated.

Keys (docs/configuration.md): ``zfs_pool``, ``quota``, ``reservation``, ``checkpoint_keep``,
``criu``, ``criu_dir``, ``driver``. Annotations ``lxcri.proxmox.io/quota``, ``/reservation``,
``/checkpoint-keep`` and ``/criu`` override them where ``[annotations] allow`` permits
(:func:`runtime.config.overrides` enforces that). Every error names the key. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runtime.errdefs import InvalidArgument
from storage.layout import check_pool
from storage.zfs_parse import format_size, parse_size

CRIU_MODES = ("auto", "always", "never")
DRIVERS = ("auto", "cli", "lzc")
DEFAULT_CHECKPOINT_KEEP = 10
DEFAULT_CRIU_DIR = Path("/var/lib/proxmox-lxcri/criu")


@dataclass(frozen=True)
class StorageSettings:
    #: None: no ZFS; containers use the plain directory rootfs containerd mounts.
    pool: str | None = None
    quota: int | None = None
    reservation: int | None = None
    #: Checkpoints kept per container (oldest removed first); 0 keeps all.
    checkpoint_keep: int = DEFAULT_CHECKPOINT_KEEP
    #: auto: dump processes with CRIU where `criu check` passes; always: fail where it does
    #: not; never: filesystem checkpoints only.
    criu: str = "auto"
    criu_dir: Path = DEFAULT_CRIU_DIR
    driver: str = "auto"

    def zfs_props(self) -> dict[str, str]:
        """Properties for a container dataset (quota and reservation, when set)."""
        props: dict[str, str] = {}
        if self.quota is not None:
            props["quota"] = str(self.quota)
        if self.reservation is not None:
            props["reservation"] = str(self.reservation)
        return props


def _size(value: Any, where: str) -> int | None:
    if value is None or value == "" or (isinstance(value, str) and value.lower() == "none"):
        return None
    if isinstance(value, bool):
        raise InvalidArgument(f"{where}: expected a size such as \"512M\", got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        try:
            n = parse_size(value)
        except ValueError:
            raise InvalidArgument(f"{where}: {value!r} is not a size (bytes, or a number with "
                                  "K, M, G or T)") from None
    else:
        raise InvalidArgument(f"{where}: expected a size such as \"512M\", got {value!r}")
    if n <= 0:
        raise InvalidArgument(f"{where}: must be greater than zero (or \"none\")")
    return n


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise InvalidArgument(f"{where}: expected a whole number, got {value!r}")
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{where}: expected a whole number, got {value!r}") from None
    if n < 0:
        raise InvalidArgument(f"{where}: must not be negative")
    return n


def _choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise InvalidArgument(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return str(value)


KNOWN_KEYS = {"zfs_pool", "quota", "reservation", "checkpoint_keep", "criu", "criu_dir",
              "driver"}


def from_section(section: Mapping[str, Any]) -> StorageSettings:
    """Settings from the raw ``[storage]`` table."""
    unknown = sorted(set(section) - KNOWN_KEYS)
    if unknown:
        raise InvalidArgument(f"[storage] {unknown[0]}: unknown key (known: "
                              f"{', '.join(sorted(KNOWN_KEYS))})")
    pool = section.get("zfs_pool") or None
    if pool is not None and not isinstance(pool, str):
        raise InvalidArgument(f"[storage] zfs_pool: expected a pool name, got {pool!r}")
    criu_dir = section.get("criu_dir", str(DEFAULT_CRIU_DIR))
    if not isinstance(criu_dir, str) or not criu_dir.startswith("/"):
        raise InvalidArgument(f"[storage] criu_dir: expected an absolute path, got {criu_dir!r}")
    settings = StorageSettings(
        pool=check_pool(pool) if pool else None,
        quota=_size(section.get("quota"), "[storage] quota"),
        reservation=_size(section.get("reservation"), "[storage] reservation"),
        checkpoint_keep=_count(section.get("checkpoint_keep", DEFAULT_CHECKPOINT_KEEP),
                               "[storage] checkpoint_keep"),
        criu=_choice(section.get("criu", "auto"), CRIU_MODES, "[storage] criu"),
        criu_dir=Path(criu_dir),
        driver=_choice(section.get("driver", "auto"), DRIVERS, "[storage] driver"),
    )
    _check_pair(settings, "[storage] reservation")
    return settings


def with_overrides(base: StorageSettings, overrides: Mapping[str, str]) -> StorageSettings:
    """``base`` with the allowed ``lxcri.proxmox.io/<key>`` annotations applied."""
    prefix = "annotation lxcri.proxmox.io/"
    s = base
    if "quota" in overrides:
        s = replace(s, quota=_size(overrides["quota"], prefix + "quota"))
    if "reservation" in overrides:
        s = replace(s, reservation=_size(overrides["reservation"], prefix + "reservation"))
    if "checkpoint-keep" in overrides:
        s = replace(s, checkpoint_keep=_count(overrides["checkpoint-keep"],
                                              prefix + "checkpoint-keep"))
    if "criu" in overrides:
        s = replace(s, criu=_choice(overrides["criu"], CRIU_MODES, prefix + "criu"))
    _check_pair(s, prefix + "reservation")
    return s


def _check_pair(s: StorageSettings, where: str) -> None:
    # ZFS itself answers a reservation above the quota with a bare "out of space".
    if s.quota is not None and s.reservation is not None and s.reservation > s.quota:
        raise InvalidArgument(f"{where}: {format_size(s.reservation)} is more than the quota "
                              f"{format_size(s.quota)}")
