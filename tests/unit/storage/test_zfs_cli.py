"""The command-line driver's argv and error handling, with a scripted runner."""

from __future__ import annotations

import asyncio

import pytest

from runtime.errdefs import FailedPrecondition, NotFound, Unavailable
from storage import zfs_cli
from storage.zfs_cli import ZfsCli
from tests.unit.storage.fakes import FakeRunner

BUSY = "cannot destroy 'tank/c': dataset is busy\n"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zfs_cli, "BUSY_RETRIES", (0.0, 0.0, 0.0))


def test_destroy_unmounts_first_and_retries_busy() -> None:
    runner = FakeRunner().on("zfs", "destroy", rc=1, err=BUSY).on("zfs", "destroy", rc=0)
    asyncio.run(ZfsCli(runner).destroy("tank/c", snapshots=True))
    assert runner.calls == [("zfs", "umount", "tank/c"), ("zfs", "destroy", "-r", "tank/c"),
                            ("zfs", "destroy", "-r", "tank/c")]


def test_busy_for_good_is_unavailable() -> None:
    runner = FakeRunner().on("zfs", "destroy", rc=1, err=BUSY)
    with pytest.raises(Unavailable, match="dataset is busy"):
        asyncio.run(ZfsCli(runner).destroy("tank/c"))
    assert len([c for c in runner.calls if c[1] == "destroy"]) == 4  # 1 + 3 retries


def test_stuck_mount_is_forced_before_destroy() -> None:
    runner = (FakeRunner().on("zfs", "umount", "tank/c", rc=1,
                              err="cannot unmount '/m/c': Device or resource busy\n"))
    asyncio.run(ZfsCli(runner).destroy("tank/c"))
    assert ("zfs", "umount", "-f", "tank/c") in runner.calls
    assert runner.calls[-1] == ("zfs", "destroy", "tank/c")


def test_create_and_clone_argv() -> None:
    runner = FakeRunner()
    zfs = ZfsCli(runner)
    asyncio.run(zfs.create("tank/a", {"quota": "100", "x:y": "z"}, parents=True))
    asyncio.run(zfs.clone("tank/i@base", "tank/c", {"reservation": "5"}))
    asyncio.run(zfs.rollback("tank/c@s", destroy_newer=True))
    assert runner.calls == [
        ("zfs", "create", "-p", "-o", "quota=100", "-o", "x:y=z", "tank/a"),
        ("zfs", "clone", "-o", "reservation=5", "tank/i@base", "tank/c"),
        ("zfs", "rollback", "-r", "tank/c@s"),
    ]


def test_exists_and_missing() -> None:
    runner = FakeRunner().on("zfs", "get", rc=1,
                             err="cannot open 'tank/x': dataset does not exist\n")
    assert asyncio.run(ZfsCli(runner).exists("tank/x")) is False
    with pytest.raises(NotFound, match="zfs get: cannot open 'tank/x'"):
        asyncio.run(ZfsCli(runner).get(["tank/x"], ["used"]))


def test_mount_and_unmount_are_idempotent() -> None:
    runner = (FakeRunner()
              .on("zfs", "mount", rc=1, err="cannot mount 'tank/c': filesystem already "
                  "mounted\n")
              .on("zfs", "umount", rc=1, err="cannot unmount 'tank/c': not currently "
                  "mounted\n"))
    asyncio.run(ZfsCli(runner).mount("tank/c"))
    asyncio.run(ZfsCli(runner).unmount("tank/c"))


def test_rollback_past_newer_is_failed_precondition() -> None:
    runner = FakeRunner().on("zfs", "rollback", rc=1, err=(
        "cannot rollback to 'tank/c@a': more recent snapshots exist\nuse '-r' to force "
        "deletion of the following snapshots:\ntank/c@b\n"))
    with pytest.raises(FailedPrecondition, match="more recent snapshots exist"):
        asyncio.run(ZfsCli(runner).rollback("tank/c@a"))


def test_missing_tool_is_unavailable() -> None:
    class Missing(FakeRunner):
        async def run(self, argv, *, input=None, timeout=30.0):  # type: ignore[no-untyped-def]
            raise FileNotFoundError(2, "No such file", argv[0])

    with pytest.raises(Unavailable, match="not installed"):
        asyncio.run(ZfsCli(Missing()).exists("tank"))
