"""Logging to the bundle's ``log`` FIFO, which containerd reads and copies to its own log.

containerd holds the FIFO open read-write, so a non-blocking write-only open succeeds while it
runs; while it is down there is no reader (ENXIO on open, EPIPE on write) and a full pipe gives
EAGAIN. Lines are then dropped, never retried and never reported to the same sink
(shim-protocol.md 2.6; rust-extensions PR #240's SIGPIPE loop).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path


def open_log_fifo(path: Path) -> int:
    """fd 2 becomes the FIFO (so tracebacks reach containerd too), or /dev/null."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 2)
    os.close(fd)
    return 2


_FORMATTER = logging.Formatter()


class FifoHandler(logging.Handler):
    """logfmt lines, one ``write`` each so that concurrent writers never interleave a line."""

    def __init__(self, fd: int = 2) -> None:
        super().__init__()
        self.fd = fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage().replace('"', '\\"')
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            line = (f'time="{ts}.{int(record.msecs):03d}Z" level={record.levelname.lower()} '
                    f'msg="{msg}" logger={record.name} pid={os.getpid()}\n')
            if record.exc_info:
                line += _FORMATTER.formatException(record.exc_info) + "\n"
            os.write(self.fd, line.encode("utf-8", "replace"))
        except OSError:
            pass  # reader gone or pipe full: drop the line


def setup(debug: bool, fd: int = 2) -> None:
    root = logging.getLogger()
    root.handlers[:] = [FifoHandler(fd)]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
