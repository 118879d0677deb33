"""Opening a process's stdio from containerd's stdio paths, and feeding its stdin.

No backend knowledge: the init (LXC's monitor) and exec processes (lxc-attach) use the same
helpers. The semantics follow shim-protocol.md section 2.11:

- ``""`` → no stream; the spawner substitutes ``/dev/null`` (``None`` here).
- a FIFO path (``/abs/path`` or ``fifo:///abs/path``), stdout/stderr: opened ``O_RDWR``. That
  open never blocks (fifo(7)), and the child gets the very same file, so its writes never fail
  with EPIPE while the client is briefly absent. The shim closes its own copy right after the
  spawn: then the client's EOF comes exactly when the last process holding the output exits.
- a FIFO path, stdin: the client opens its write end asynchronously, so a plain
  ``O_RDONLY|O_NONBLOCK`` read would return EOF before it arrives. The FIFO is opened
  non-blocking but only read once epoll reports it readable: on Linux a FIFO reader reports
  neither data nor hang-up until a writer has come (``pipe_poll`` compares the writer counter
  with its value at open). Data is copied into a pipe whose read end is the child's stdin;
  the client's EOF, or :meth:`ProcessIO.close_stdin` (CloseIO), closes that pipe.
- ``file:///abs/path`` → appended to (created 0644, parents 0755); stdout and stderr share one
  handle when they name the same file.
- ``binary://`` (a logging driver) is not supported yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat
import struct
import termios
import tty
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from runtime.errdefs import InvalidArgument, NotFound, NotImplementedErr
from runtime.types import Stdio

_CHUNK = 65536


@dataclass
class ProcessIO:
    """The child's stdio fds plus whatever the shim keeps to feed or close them."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    #: The client's stdin FIFO and the pipe end the shim writes (None without stdin).
    _stdin_src: int | None = None
    _stdin_sink: int | None = None
    _copy: asyncio.Task[None] | None = None
    _child_fds: list[int] = field(default_factory=list)

    #: Whether the child must take its stdin (a pty slave) as controlling terminal.
    ctty = False

    def spawned(self) -> None:
        """Call once the child holds its copies: drop ours and start feeding stdin."""
        for fd in self._child_fds:
            _close(fd)
        self._child_fds.clear()
        self.stdin = self.stdout = self.stderr = None
        if self._stdin_src is not None and self._stdin_sink is not None:
            src, sink = self._stdin_src, self._stdin_sink
            self._copy = asyncio.get_running_loop().create_task(copy_fd(src, sink))
            # A done callback (not a finally) closes both ends: it also runs when the task is
            # cancelled before its first step, and the client's EOF reaches the child.
            self._copy.add_done_callback(lambda _t: _close(src, sink))
            self._stdin_src = self._stdin_sink = None

    def close_stdin(self) -> None:
        """Close the process's stdin now (containerd CloseIO); idempotent."""
        if self._copy is not None:
            self._copy.cancel()  # its done callback closes both ends
        for fd in (self._stdin_src, self._stdin_sink):
            if fd is not None:
                _close(fd)
        self._stdin_src = self._stdin_sink = None

    def close(self) -> None:
        """Synchronous release for a spawn that never happened."""
        self.close_stdin()
        for fd in self._child_fds:
            _close(fd)
        self._child_fds.clear()

    async def aclose(self) -> None:
        """Release everything (also the child ends if the spawn never happened)."""
        self.close_stdin()
        for fd in self._child_fds:
            _close(fd)
        self._child_fds.clear()
        if self._copy is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._copy
            self._copy = None


def open_stdio(stdio: Stdio, console_size: object = None) -> ProcessIO:
    """Open the three streams for a child. On error nothing stays open.

    ``console_size`` is the OCI ``process.consoleSize`` ({"height", "width"}) a terminal starts
    with, before the first ResizePty (ctr sets it from its own terminal)."""
    if stdio.terminal:
        term = open_terminal(stdio)
        if isinstance(console_size, dict):
            with contextlib.suppress(TypeError, ValueError):
                term.resize(int(console_size.get("width", 0)),
                            int(console_size.get("height", 0)))
        return term
    io = ProcessIO()
    try:
        io.stdout = _open_output(stdio.stdout, "stdout", io._child_fds)
        if stdio.stderr and stdio.stderr == stdio.stdout and _is_file_uri(stdio.stdout):
            io.stderr = io.stdout  # one handle for both: appends cannot interleave mid-write
        else:
            io.stderr = _open_output(stdio.stderr, "stderr", io._child_fds)
        _open_stdin(stdio.stdin, io)
    except BaseException:
        for fd in io._child_fds + [io._stdin_src or -1, io._stdin_sink or -1]:
            if fd >= 0:
                _close(fd)
        raise
    return io


@dataclass
class TerminalIO(ProcessIO):
    """A pty the shim owns (shim-protocol.md 2.11, "Terminal"): the child gets the slave as
    stdin, stdout and stderr (and as its controlling terminal, ``ctty``); the shim copies the
    stdin FIFO into the master and the master into the stdout FIFO. stderr is unused, as with
    runc's console. ResizePty sets the master's window size."""

    master: int = -1
    _sink: int | None = None
    _out: asyncio.Task[None] | None = None

    ctty = True

    def spawned(self) -> None:
        loop = asyncio.get_running_loop()
        src = self._stdin_src
        self._stdin_src = None
        super().spawned()  # closes the slave (our copy) and clears the child fds
        if src is not None:
            self._copy = loop.create_task(copy_fd(src, self.master))
            self._copy.add_done_callback(lambda _t: _close(src))
        self._out = loop.create_task(_copy_master(self.master, self._sink))

    def resize(self, width: int, height: int) -> None:
        if self.master >= 0:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ,
                        struct.pack("HHHH", height, width, 0, 0))

    def close_stdin(self) -> None:
        # Stop feeding the pty; the master stays open, it carries the output too.
        if self._copy is not None:
            self._copy.cancel()
        if self._stdin_src is not None:
            _close(self._stdin_src)
            self._stdin_src = None

    def close(self) -> None:
        super().close()
        _close(*(fd for fd in (self.master, self._sink) if fd is not None and fd >= 0))
        self.master, self._sink = -1, None

    async def aclose(self, drain: float = 10.0) -> None:
        """Wait (up to ``drain`` seconds, like runc's Delete) for the output to be copied,
        then close everything: the client's stdout FIFO reaches EOF."""
        if self._out is not None:
            try:
                async with asyncio.timeout(drain):
                    await asyncio.shield(self._out)
            except TimeoutError:
                self._out.cancel()
        await super().aclose()
        self.close()


def open_terminal(stdio: Stdio) -> TerminalIO:
    master, slave = os.openpty()
    io = TerminalIO(master=master)
    try:
        os.set_inheritable(master, False)
        # Raw: the container side has its own pty (LXC's console or lxc-attach's), which does
        # the line discipline once; a cooked slave here would turn "\n" into "\r\r\n".
        tty.setraw(slave)
        io.stdin = io.stdout = io.stderr = slave
        io._child_fds.append(slave)
        os.set_blocking(master, False)
        if stdio.stdout:
            io._sink = _open_existing(_fifo_path(stdio.stdout, "stdout"), os.O_RDWR, "stdout")
            os.set_blocking(io._sink, False)
        if stdio.stdin:
            io._stdin_src = _open_existing(_fifo_path(stdio.stdin, "stdin"),
                                           os.O_RDONLY | os.O_NONBLOCK, "stdin")
    except BaseException:
        io.close()
        raise
    return io


async def _copy_master(master: int, sink: int | None) -> None:
    """Master → stdout FIFO until the last slave holder exits (EIO on the master)."""
    while True:
        await fd_ready(master)
        try:
            data = os.read(master, _CHUNK)
        except BlockingIOError:
            continue
        except OSError:  # EIO: no process holds the slave any more
            return
        if not data:
            return
        if sink is not None and not await _write_all(sink, data):
            sink = None  # the client went away; keep draining so the child never blocks


def _is_file_uri(uri: str) -> bool:
    return uri.startswith("file://")


def _fifo_path(uri: str, name: str) -> str:
    if uri.startswith("binary://"):
        raise NotImplementedErr(f"{name}: binary:// logging drivers are not supported yet")
    path = uri[len("fifo://"):] if uri.startswith("fifo://") else uri
    if not path.startswith("/"):
        raise InvalidArgument(f"{name}: {uri!r} is not an absolute path or a known URI")
    return path


def _open_output(uri: str, name: str, owned: list[int]) -> int | None:
    if not uri:
        return None
    if _is_file_uri(uri):
        fd = _open_log_file(uri, name)
    else:
        fd = _open_existing(_fifo_path(uri, name), os.O_RDWR, name)
    owned.append(fd)
    return fd


def _open_log_file(uri: str, name: str) -> int:
    parts = urlsplit(uri)
    path = Path(unquote(parts.path))
    if not path.is_absolute() or parts.netloc:
        raise InvalidArgument(f"{name}: {uri!r} must be file:///absolute/path")
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _open_existing(path: str, flags: int, name: str) -> int:
    """Open a client FIFO (or a character device such as /dev/null)."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"{name}: {path}: no such file or directory") from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
        os.close(fd)
        raise InvalidArgument(f"{name}: {path} is not a FIFO")
    return fd


def _open_stdin(uri: str, io: ProcessIO) -> None:
    if not uri:
        return
    if _is_file_uri(uri):
        raise InvalidArgument("stdin: file:// is for stdout and stderr only")
    src = _open_existing(_fifo_path(uri, "stdin"), os.O_RDONLY | os.O_NONBLOCK, "stdin")
    io._stdin_src = src
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    io._stdin_sink = write_end
    io._child_fds.append(read_end)
    io.stdin = read_end
    os.set_blocking(write_end, False)


async def copy_fd(src: int, dst: int) -> None:
    """Copy between two non-blocking fds with the loop's selector. Waits for readability
    before every read, so a FIFO with no writer yet is not taken for EOF (module docstring).
    Stops at EOF or when the reader of ``dst`` has gone (EPIPE)."""
    while True:
        await fd_ready(src, writable=False)
        while True:
            try:
                data = os.read(src, _CHUNK)
            except BlockingIOError:
                break
            if not data:
                return
            if not await _write_all(dst, data):
                return


async def _write_all(fd: int, data: bytes) -> bool:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            await fd_ready(fd, writable=True)
        except BrokenPipeError:
            return False
    return True


async def fd_ready(fd: int, *, writable: bool = False) -> None:
    """Wait until the loop's selector reports ``fd`` readable (or writable)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    if writable:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await fut
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def _close(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
