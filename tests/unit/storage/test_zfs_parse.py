"""Parsing of captured ``zfs``/``zpool`` output (zfs-fuse 0.7 here, OpenZFS 2.1 from the kernel
test host) and the classification of their error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.errdefs import (
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from storage.zfs_cli import to_info
from storage.zfs_parse import (
    classify,
    first_line,
    format_size,
    int_or_none,
    is_busy,
    parse_get,
    parse_size,
    parse_zpool_list,
)

CAPTURED = Path(__file__).parent / "captured"
IMPLEMENTATIONS = sorted(p.name for p in CAPTURED.iterdir() if (p / "outputs.json").exists())


def outputs(impl: str) -> dict[str, dict[str, object]]:
    return json.loads((CAPTURED / impl / "outputs.json").read_text())  # type: ignore[no-any-return]


def test_both_implementations_are_captured() -> None:
    assert "zfs-fuse-0.7" in IMPLEMENTATIONS
    assert any(i.startswith("openzfs") for i in IMPLEMENTATIONS), IMPLEMENTATIONS


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_get_recursive(impl: str) -> None:
    raw = parse_get(str(outputs(impl)["get_recursive"]["stdout"]))
    c1, c2 = raw["tank/containers/c1"], raw["tank/containers/c2"]
    info = to_info("tank/containers/c1", c1, ("lxcri.proxmox.io:exported",))
    assert info.type == "filesystem" and info.quota == 104857600
    assert info.reservation == 10485760 and info.mounted
    assert info.mountpoint == "/mnt/tank/containers/c1" and info.origin is None
    assert info.creation > 1_600_000_000 and info.user == {}
    clone = to_info("tank/containers/c2", c2)
    assert clone.origin == "tank/containers/c1@checkpoint-1" and clone.quota is None
    snap = to_info("tank/containers/c1@checkpoint-2", raw["tank/containers/c1@checkpoint-2"],
                   ("lxcri.proxmox.io:exported",))
    assert snap.type == "snapshot" and snap.snapshot_name == "checkpoint-2"
    assert snap.user == {"lxcri.proxmox.io:exported": "tok"}
    assert snap.quota is None and snap.available is None and snap.mountpoint is None
    pool = to_info("tank", raw["tank"])
    assert pool.quota is None and pool.used >= info.used
    assert list(raw)[0] == "tank"


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_zpool_list(impl: str) -> None:
    (pool,) = parse_zpool_list(str(outputs(impl)["zpool_list"]["stdout"]))
    assert pool.name == "tank" and pool.health == "ONLINE"
    assert pool.size >= pool.free > 0 and pool.allocated > 0  # human-readable: rounded


EXPECTED = {
    "err_exists": AlreadyExists,
    "err_snap_exists": AlreadyExists,
    "err_missing": NotFound,
    "err_nopool": NotFound,
    "err_children": FailedPrecondition,
    "err_clones": FailedPrecondition,
    "err_newer": FailedPrecondition,
    "err_badvalue": InvalidArgument,
}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_errors_are_classified(impl: str, case: str) -> None:
    out = outputs(impl)[case]
    assert out["rc"] != 0
    stderr = str(out["stderr"])
    assert classify(stderr) is EXPECTED[case], stderr
    assert first_line(stderr).startswith("cannot ")


@pytest.mark.parametrize("stderr, cls", [
    ("cannot destroy 'tank/x': dataset is busy\n", Unavailable),
    ("connect: No such file or directory\nPlease make sure that the zfs-fuse daemon is "
     "running.\n", Unavailable),
    ("The ZFS modules are not loaded.\nTry running '/sbin/modprobe zfs' as root to load "
     "them.\n", Unavailable),
    ("cannot create 'tank/q': out of space\n", FailedPrecondition),
    ("something new and strange\n", Internal),
])
def test_other_messages(stderr: str, cls: type) -> None:
    assert classify(stderr) is cls


def test_busy() -> None:
    assert is_busy("cannot destroy 'tank/x': dataset is busy")
    assert is_busy("cannot unmount '/mnt/x': Device or resource busy")
    assert not is_busy("cannot open 'tank/x': dataset does not exist")


@pytest.mark.parametrize("text, n", [
    ("0", 0), ("512", 512), ("1K", 1024), ("100M", 100 << 20), ("1.5G", 3 << 29),
    ("504M", 504 << 20), ("992K", 992 << 10), ("2T", 2 << 40), ("8m", 8 << 20),
    ("16MiB", 16 << 20), ("10MB", 10 << 20),
])
def test_parse_size(text: str, n: int) -> None:
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "lots", "-1M", "1.5", "1X", "M"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_size() -> None:
    assert format_size(0) == "0" and format_size(1024) == "1K"
    assert format_size(100 << 20) == "100M" and format_size(3 << 29) == "1.5G"


def test_int_or_none() -> None:
    assert int_or_none("-") is None and int_or_none("none") is None
    assert int_or_none("0") == 0 and int_or_none("42") == 42


def test_parse_get_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="unexpected"):
        parse_get("not tab separated\n")
