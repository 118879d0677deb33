"""The shim's logfmt lines (shim/log.py) and the RPC edge's log line and event
(shim/observe.py), as pure logic: a record in, a line out."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from runtime.errdefs import NotFound
from runtime.oplog import OpLog
from shim import log as shimlog
from shim.observe import go_duration, observed

_PAIR = re.compile(r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse(line: str) -> dict[str, str]:
    return {k: (json.loads(v) if v.startswith('"') else v) for k, v in _PAIR.findall(line)}


def record(msg: str, *args: object, level: int = logging.INFO, exc: BaseException | None = None,
           **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("test.log")
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logger.makeRecord("test.log", level, __file__, 1, msg, args, exc_info, extra=extra)


def test_line_is_logfmt_with_extra_fields() -> None:
    line = shimlog.format_line(record("created %s", "c1", rpc="Create", duration="1.5ms"))
    assert line.endswith("\n") and line.count("\n") == 1
    fields = parse(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", fields["time"])
    assert fields["level"] == "info"
    assert fields["msg"] == "created c1"
    assert fields["rpc"] == "Create" and fields["duration"] == "1.5ms"
    assert fields["runtime"] == "io.containerd.proxmox.v2" and fields["logger"] == "test.log"


def test_hostile_values_stay_on_one_line() -> None:
    evil = 'a"b\nlevel=error msg=forged\\'
    line = shimlog.format_line(record("got %s", evil, level=logging.WARNING, container_id=evil))
    assert line.count("\n") == 1
    fields = parse(line)
    assert fields["level"] == "warning"
    assert fields["container_id"] == evil and fields["msg"] == f"got {evil}"


def test_context_fields_name_the_container() -> None:
    with shimlog.fields(container_id="c1", exec_id="", namespace="k8s.io"):
        fields = parse(shimlog.format_line(record("inside")))
    assert fields["container_id"] == "c1" and fields["namespace"] == "k8s.io"
    assert "exec_id" not in fields  # empty values are left out
    assert "container_id" not in parse(shimlog.format_line(record("outside")))


def test_exception_is_a_quoted_field() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError as exc:
        line = shimlog.format_line(record("failed", level=logging.ERROR, exc=exc))
    assert line.count("\n") == 1
    fields = parse(line)
    assert fields["error"] == "ValueError: bad\nthing"
    assert "Traceback" in fields["stack"]


def test_bare_values_as_logrus_leaves_them() -> None:
    assert shimlog.quote("abc-1.2/x@y") == "abc-1.2/x@y"
    assert shimlog.quote("a b") == '"a b"'
    assert shimlog.quote("") == '""'


def test_zygote_log_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "runtime" / "zygote.log"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        shimlog.setup_file(path, max_bytes=4096)
        for i in range(200):
            logging.getLogger("shim.zygote").error("line %d %s", i, "x" * 50)
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:], root.level = saved
    assert path.stat().st_size <= 4096
    assert path.with_name("zygote.log.1").stat().st_size <= 4096
    assert sorted(p.name for p in path.parent.iterdir()) == ["zygote.log", "zygote.log.1"]
    assert parse(path.read_text().splitlines()[-1])["msg"].startswith("line 199 ")


def test_go_duration() -> None:
    assert go_duration(1.5) == "1.5s"
    assert go_duration(0.0123456) == "12.346ms"
    assert go_duration(0.000002) == "2µs"


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(parse(shimlog.format_line(record)))


@pytest.fixture
def captured() -> object:
    handler = Capture()
    logger = logging.getLogger("shim.rpc")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rpc_edge_logs_and_records(tmp_path: Path, captured: Capture) -> None:
    oplog = OpLog(tmp_path / "events.log", source="task")

    async def start(req: object, ctx: object) -> object:
        logging.getLogger("shim.rpc").info("inside")
        return SimpleNamespace(pid=42)

    handler = observed("Start", start, oplog, "k8s.io")
    resp = asyncio.run(handler(SimpleNamespace(id="c1", exec_id="e1"), None))
    assert resp.pid == 42
    inside, done = captured.lines
    assert inside["container_id"] == "c1" and inside["exec_id"] == "e1"
    assert done["rpc"] == "Start" and done["level"] == "info" and done["duration"]
    [event] = events(tmp_path / "events.log")
    assert event["event"] == "start" and event["ok"] is True and event["pid"] == 42
    assert event["namespace"] == "k8s.io" and event["container_id"] == "c1"
    assert event["exec_id"] == "e1" and isinstance(event["seconds"], float)


def test_rpc_edge_records_failures_and_keeps_polls_quiet(tmp_path: Path,
                                                         captured: Capture) -> None:
    oplog = OpLog(tmp_path / "events.log", source="task")

    async def kill(req: object, ctx: object) -> object:
        raise NotFound("container c1: not found")

    async def state(req: object, ctx: object) -> object:
        return SimpleNamespace()

    with pytest.raises(NotFound):
        asyncio.run(observed("Kill", kill, oplog, "ns")(
            SimpleNamespace(id="c1", exec_id="", signal=9, all=False), None))
    asyncio.run(observed("State", state, oplog, "ns")(SimpleNamespace(id="c1", exec_id=""),
                                                      None))
    failed, polled = captured.lines
    assert failed["level"] == "warning" and failed["error"] == "container c1: not found"
    assert polled["level"] == "debug" and polled["rpc"] == "State"
    [event] = events(tmp_path / "events.log")  # State is not a lifecycle event
    assert event["event"] == "kill" and event["ok"] is False and event["signal"] == 9
    assert event["error"] == "container c1: not found" and "exec_id" not in event


def test_create_from_a_checkpoint_is_a_restore(tmp_path: Path) -> None:
    oplog = OpLog(tmp_path / "events.log", source="task")

    async def create(req: object, ctx: object) -> object:
        return SimpleNamespace(pid=7)

    asyncio.run(observed("Create", create, oplog, "ns")(
        SimpleNamespace(id="c1", checkpoint="/tmp/cp"), None))
    assert [e["event"] for e in events(tmp_path / "events.log")] == ["restore"]
