"""``[storage]`` settings and annotation overrides: values, defaults and the errors users see."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime.errdefs import InvalidArgument
from runtime.types import CreateConfig
from storage.provisioner import settings_for
from storage.settings import StorageSettings, from_section, with_overrides


def test_defaults_mean_no_zfs() -> None:
    s = from_section({})
    assert s == StorageSettings() and s.pool is None and s.zfs_props() == {}


def test_full_section() -> None:
    s = from_section({"zfs_pool": "tank", "quota": "10G", "reservation": 1 << 30,
                      "checkpoint_keep": 3, "criu": "never", "criu_dir": "/srv/criu",
                      "driver": "cli"})
    assert (s.pool, s.quota, s.reservation, s.checkpoint_keep, s.criu, s.driver) == (
        "tank", 10 << 30, 1 << 30, 3, "never", "cli")
    assert s.criu_dir == Path("/srv/criu")
    assert s.zfs_props() == {"quota": str(10 << 30), "reservation": str(1 << 30)}


@pytest.mark.parametrize("section, message", [
    ({"zfs_pool": "tank/sub"}, "zfs_pool: 'tank/sub' is not a ZFS pool name"),
    ({"zfs_pool": 3}, "zfs_pool: expected a pool name"),
    ({"quota": "lots"}, r"\[storage\] quota: 'lots' is not a size"),
    ({"quota": 0}, "quota: must be greater than zero"),
    ({"quota": True}, "quota: expected a size"),
    ({"quota": "1G", "reservation": "2G"}, "reservation: 2G is more than the quota 1G"),
    ({"checkpoint_keep": -1}, "checkpoint_keep: must not be negative"),
    ({"checkpoint_keep": "x"}, "checkpoint_keep: expected a whole number"),
    ({"criu": "sometimes"}, "criu: 'sometimes' is not one of auto, always, never"),
    ({"driver": "fast"}, "driver: 'fast' is not one of auto, cli, lzc"),
    ({"criu_dir": "relative"}, "criu_dir: expected an absolute path"),
    ({"zfs_poll": "tank"}, r"\[storage\] zfs_poll: unknown key"),
])
def test_bad_section(section: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        from_section(section)


def test_overrides() -> None:
    base = from_section({"zfs_pool": "tank", "quota": "1G"})
    s = with_overrides(base, {"quota": "2G", "reservation": "512M", "checkpoint-keep": "4",
                              "criu": "always"})
    assert (s.quota, s.reservation, s.checkpoint_keep, s.criu) == (2 << 30, 512 << 20, 4,
                                                                   "always")
    assert with_overrides(base, {"quota": "none"}).quota is None


def _config(settings: dict[str, Any], annotations: dict[str, str]) -> CreateConfig:
    return CreateConfig(id="c1", namespace="default", bundle=Path("/nonexistent"),
                        spec={"annotations": annotations}, settings=settings)


def test_annotation_must_be_allowed_by_the_operator() -> None:
    settings = {"storage": {"zfs_pool": "tank"}, "annotations": {"allow": ["reservation"]}}
    with pytest.raises(InvalidArgument, match="lxcri.proxmox.io/quota: not allowed"):
        settings_for(_config(settings, {"lxcri.proxmox.io/quota": "1G"}))
    s = settings_for(_config(settings, {"lxcri.proxmox.io/reservation": "1G"}))
    assert s.reservation == 1 << 30


def test_annotation_quota_allowed_by_default() -> None:
    s = settings_for(_config({"storage": {"zfs_pool": "tank"}},
                             {"lxcri.proxmox.io/quota": "64M", "other.io/x": "y"}))
    assert s.quota == 64 << 20


def test_annotation_errors_name_the_annotation() -> None:
    with pytest.raises(InvalidArgument, match="annotation lxcri.proxmox.io/checkpoint-keep"):
        settings_for(_config({"storage": {"zfs_pool": "tank"}},
                             {"lxcri.proxmox.io/checkpoint-keep": "many"}))
