"""Logging in containerd's format: logfmt lines to the bundle's ``log`` FIFO.

containerd copies what the shim writes to that FIFO to its own stderr verbatim (shim-protocol.md
2.6): the lines end up in containerd's journal next to its own, so they use the same logfmt as
containerd's logrus ``TextFormatter`` (``time="…" level=info msg="…" key=value``), with
structured fields: ``container_id``, ``exec_id``, ``rpc``, ``duration``, ``namespace`` … Fields
come from ``extra=`` and from :func:`fields` (a context variable the RPC edge sets, so every line
logged while a request runs names its container). containerd 1.6 gives a shim no sign of its own
``[debug] format = "json"``: the shim's argv holds only ``-debug`` and its environment no format
variable (checked on 1.6.20), and the runc shim always writes text too; so does this one.

containerd holds the FIFO open read-write, so a non-blocking write-only open succeeds while it
runs; while it is down there is no reader (ENXIO on open, EPIPE on write) and a full pipe gives
EAGAIN. Lines are then dropped, never retried and never reported to the same sink
(shim-protocol.md 2.6; rust-extensions PR #240's SIGPIPE loop).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import traceback
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path

RUNTIME = "io.containerd.proxmox.v2"

#: Fields every line logged in the current context carries (set per RPC by the RPC edge).
_context: ContextVar[Mapping[str, object] | None] = ContextVar("lxcri_log_fields", default=None)

#: The attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}

#: logrus quotes a value unless it is made only of these (TextFormatter.needsQuoting).
_BARE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._/@^+")


@contextlib.contextmanager
def fields(**values: object) -> Iterator[None]:
    """Add ``values`` (None ones left out) to every line logged inside the block, including by
    tasks it starts (they copy the context)."""
    merged = dict(_context.get() or {})
    merged.update({k: v for k, v in values.items() if v is not None and v != ""})
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def quote(value: object) -> str:
    """A logfmt value: bare when logrus would leave it bare, else a quoted string with Go-like
    escapes (JSON's string escapes are the same for what matters: ``\\"``, ``\\\\``, ``\\n``)."""
    text = value if isinstance(value, str) else str(value)
    if text and all(ch in _BARE for ch in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def timestamp(created: float) -> str:
    """RFC 3339 with nanoseconds in UTC, as containerd writes (log.RFC3339NanoFixed)."""
    whole = int(created)
    nanos = int(round((created - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{nanos:09d}Z"


_LEVELS = {"WARNING": "warning", "CRITICAL": "fatal"}


def format_line(record: logging.LogRecord) -> str:
    """One logfmt line (with its newline) for ``record``."""
    level = _LEVELS.get(record.levelname, record.levelname.lower())
    items: dict[str, object] = dict(_context.get() or {})
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_") and value is not None:
            items[key] = value
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        items.setdefault("error", f"{type(exc).__name__}: {exc}")
        items["stack"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
    items["logger"] = record.name
    items["pid"] = os.getpid()
    items["runtime"] = RUNTIME
    line = (f"time={quote(timestamp(record.created))} level={level} "
            f"msg={json.dumps(record.getMessage(), ensure_ascii=False)}")
    for key in sorted(items):
        line += f" {key}={quote(items[key])}"
    return line + "\n"


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return format_line(record).rstrip("\n")


def open_log_fifo(path: Path) -> int:
    """fd 2 becomes the FIFO (so tracebacks reach containerd too), or /dev/null."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 2)
    os.close(fd)
    return 2


class FifoHandler(logging.Handler):
    """logfmt lines, one ``write`` each so that concurrent writers never interleave a line."""

    def __init__(self, fd: int = 2) -> None:
        super().__init__()
        self.fd = fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            os.write(self.fd, format_line(record).encode("utf-8", "replace"))
        except OSError:
            pass  # reader gone or pipe full: drop the line
        except Exception:  # a broken record must not take the daemon down
            pass


def _install(handler: logging.Handler, debug: bool) -> None:
    root = logging.getLogger()
    for old in root.handlers:
        if old is not handler:
            old.close()  # a forked daemon must not keep the zygote's log file open
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def setup(debug: bool, fd: int = 2) -> None:
    """The daemon's logging: containerd's ``-debug`` flag (passed when its level is debug or
    trace, shim-protocol.md 2.3) turns on debug lines."""
    _install(FifoHandler(fd), debug)


#: The zygote's own log: one file of at most this size plus one rotated copy.
FILE_MAX_BYTES = 1 << 20


def setup_file(path: Path, debug: bool = False, max_bytes: int = FILE_MAX_BYTES) -> None:
    """Log to ``path`` (logfmt, bounded: rotated to ``<path>.1`` when full). For processes that
    containerd does not read, such as the zygote (shim/zygote.py)."""
    import logging.handlers  # socket, pickle …: only the zygote pays for them

    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handler: logging.Handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=1, encoding="utf-8", delay=True)
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(LogfmtFormatter())
    _install(handler, debug)
