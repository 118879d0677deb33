"""The daemon's idle and orphan watch (shim/idle.py) as pure logic, with explicit clocks."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from runtime.errdefs import NotFound
from shim.idle import DEFAULT_GRACE, GRACE_ENV, IdleWatch, grace_from_env


class FakeTasks:
    def __init__(self, bundles: dict[str, Path]) -> None:
        self.bundles = dict(bundles)
        self.reaped: list[str] = []
        self.fail_with: Exception | None = None

    def __len__(self) -> int:
        return len(self.bundles)

    def ids(self) -> list[str]:
        return list(self.bundles)

    def bundle_of(self, id: str) -> Path | None:
        return self.bundles.get(id)

    async def reap(self, id: str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.reaped.append(id)
        del self.bundles[id]


class FakeServer:
    def __init__(self) -> None:
        self.requests_in_flight = 0
        self.last_activity = 0.0


def make(tmp_path: Path, tasks: FakeTasks, grace: float = 10.0
         ) -> tuple[IdleWatch, FakeServer, list[bool]]:
    stopped: list[bool] = []
    server = FakeServer()
    watch = IdleWatch(tasks, server, tmp_path, lambda: stopped.append(True), grace)
    return watch, server, stopped


def test_exits_after_grace_without_task_or_request(tmp_path: Path) -> None:
    watch, server, stopped = make(tmp_path, FakeTasks({}))
    server.last_activity = 100.0
    assert not watch.check(now=105.0)
    assert not stopped
    assert watch.check(now=110.0)
    assert stopped == [True]


def test_a_task_or_a_request_keeps_it_alive(tmp_path: Path) -> None:
    tasks = FakeTasks({"a": tmp_path})
    watch, server, stopped = make(tmp_path, tasks)
    assert not watch.check(now=1000.0)  # a task, however long ago the last request was
    del tasks.bundles["a"]
    assert not watch.check(now=1005.0)  # the grace counts from when the task was last seen
    server.requests_in_flight = 1
    assert not watch.check(now=1020.0)  # a request in flight (a Create, a blocked Wait)
    server.requests_in_flight = 0
    server.last_activity = 1025.0
    assert not watch.check(now=1030.0)
    assert watch.check(now=1035.0)
    assert stopped == [True]


def test_own_bundle_gone_shortens_the_grace(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    stopped: list[bool] = []
    server = FakeServer()
    watch = IdleWatch(FakeTasks({}), server, bundle, lambda: stopped.append(True), 60.0)
    assert not watch.check(now=watch.interval)
    bundle.rmdir()
    assert not watch.check(now=watch.interval / 2)
    assert watch.check(now=watch.interval)


@pytest.mark.asyncio
async def test_orphans_are_reaped_others_kept(tmp_path: Path) -> None:
    kept, gone = tmp_path / "kept", tmp_path / "gone"
    kept.mkdir()
    tasks = FakeTasks({"kept": kept, "orphan": gone})
    watch, _, _ = make(tmp_path, tasks)
    await watch.reap_orphans()
    assert tasks.reaped == ["orphan"]
    assert tasks.ids() == ["kept"]


@pytest.mark.asyncio
async def test_a_failed_reap_is_retried_later(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    tasks = FakeTasks({"orphan": tmp_path / "gone"})
    tasks.fail_with = NotFound("container orphan")
    watch, _, _ = make(tmp_path, tasks)
    with caplog.at_level(logging.WARNING):
        await watch.reap_orphans()
    assert "cannot remove the orphan yet" in caplog.text
    tasks.fail_with = None
    await watch.reap_orphans()
    assert tasks.reaped == ["orphan"]


@pytest.mark.asyncio
async def test_run_stops_the_daemon(tmp_path: Path) -> None:
    watch, _, stopped = make(tmp_path, FakeTasks({"o": tmp_path / "gone"}), grace=0.2)
    await asyncio.wait_for(watch.run(), 5)
    assert stopped == [True]


@pytest.mark.parametrize("raw, expected", [
    ("", DEFAULT_GRACE), ("2.5", 2.5), ("30", 30.0),
    ("0", DEFAULT_GRACE), ("-1", DEFAULT_GRACE), ("soon", DEFAULT_GRACE),
    ("inf", DEFAULT_GRACE), ("nan", DEFAULT_GRACE),
])
def test_grace_from_env(raw: str, expected: float) -> None:
    assert grace_from_env({GRACE_ENV: raw}) == expected
