"""The zygote's side of the compiled launcher (shim/launcher/lxcri-launcher.c).

containerd executes the shim binary for ``start`` and ``delete`` and waits for each; a fresh
Python interpreter needs ~6 ms before it runs a line. The compiled launcher hands the
invocation to the zygote instead, which runs the action in a fork of its warm interpreter (the
fork costs ~0.5 ms, measured here) exactly as the Python launcher would run it in a new one:
same arguments, environment, working directory, umask and standard descriptors, and the same
``shim.cli.main``. The zygote sends back the fork's wait status, so the launcher ends as the
action did.

The relay socket's name is keyed by the installation (shim.zygote_client.relay_name), so the
newest zygote of an installation takes it over (:class:`RelaySocket`); each request is checked
against the code the zygote imported, and a zygote that imported older code declines (``s``)
and shuts down, so the launcher runs the action the slow way, which starts a current zygote.
"""

from __future__ import annotations

import array
import fcntl
import logging
import os
import select
import socket
import sys
from dataclasses import dataclass
from typing import NoReturn

log = logging.getLogger("shim.zygote")

MAGIC = b"LXCRI1"
#: Largest request read (arguments and environment); containerd's are a few KiB.
MAX_REQUEST = 1 << 20
#: The launcher's standard descriptors, in order.
STD_FDS = 3

STARTED = b"r"
DECLINED = b"s"


class BadRequest(ValueError):
    """A request that does not follow the launcher's wire format."""


@dataclass(frozen=True)
class Invocation:
    umask: int
    cwd: str
    argv: list[str]
    env: dict[str, str]


def parse(data: bytes) -> Invocation:
    """The invocation in ``data`` (format: lxcri-launcher.c's header). Every field is a
    NUL-terminated string, so none can contain a NUL or run into the next."""
    if not data.endswith(b"\0"):
        raise BadRequest("request not NUL-terminated")
    fields = data[:-1].split(b"\0")
    if len(fields) < 4 or fields[0] != MAGIC:
        raise BadRequest("not a launcher request")
    try:
        umask = int(fields[1], 8)
        argc = int(fields[3])
    except ValueError as exc:
        raise BadRequest(f"bad number: {exc}") from None
    if not 0 <= umask <= 0o777:
        raise BadRequest(f"umask out of range: {umask:o}")
    if not 1 <= argc <= len(fields) - 4:
        raise BadRequest(f"argc {argc} does not match the {len(fields) - 4} strings sent")
    cwd = os.fsdecode(fields[2])
    if not cwd.startswith("/"):
        raise BadRequest(f"working directory not absolute: {cwd!r}")
    argv = [os.fsdecode(a) for a in fields[4:4 + argc]]
    env: dict[str, str] = {}
    for entry in fields[4 + argc:]:
        name, sep, value = entry.partition(b"=")
        if sep and name:  # as the C library's getenv: an entry without '=' names nothing
            env.setdefault(os.fsdecode(name), os.fsdecode(value))
    return Invocation(umask, cwd, argv, env)


def receive(conn: socket.socket, timeout: float = 5.0) -> tuple[Invocation, list[int]]:
    """The request on ``conn`` and the launcher's three standard descriptors (the caller owns
    them). Raises BadRequest (descriptors closed) on anything malformed."""
    conn.settimeout(timeout)
    fds = array.array("i")
    chunks: list[bytes] = []
    try:
        data, ancdata, _flags, _addr = conn.recvmsg(
            MAX_REQUEST, socket.CMSG_SPACE(STD_FDS * fds.itemsize))
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
        size = len(data)
        chunks.append(data)
        while data:
            data = conn.recv(MAX_REQUEST)
            size += len(data)
            if size > MAX_REQUEST:
                raise BadRequest(f"request larger than {MAX_REQUEST} bytes")
            chunks.append(data)
        if len(fds) != STD_FDS:
            raise BadRequest(f"{len(fds)} descriptors sent, not {STD_FDS}")
        return parse(b"".join(chunks)), list(fds)
    except (OSError, BadRequest) as exc:
        for fd in fds:
            os.close(fd)
        if isinstance(exc, BadRequest):
            raise
        raise BadRequest(f"cannot read the request: {exc}") from None


def decline(conn: socket.socket) -> None:
    """Tell the launcher to run the action itself (nothing of it has run)."""
    _answer(conn, DECLINED)


def send_status(conn: socket.socket, status: int) -> bool:
    """Send the launcher the action's wait status; False if it is gone."""
    return _answer(conn, status.to_bytes(4, sys.byteorder, signed=True))


def _answer(conn: socket.socket, data: bytes) -> bool:
    try:
        conn.setblocking(True)
        conn.sendall(data)
        return True
    except OSError:
        return False


def run(invocation: Invocation, fds: list[int], code_key: str,
        conn: socket.socket) -> NoReturn:
    """In the fork: become the action the launcher was asked for, then report its exit status
    on ``conn`` and exit with it. Mirrors the Python launcher (packaging/setup.sh):
    ``sys.argv[0]`` is the shim's name, and ``shim.cli.main`` runs it.

    The status is sent after the standard descriptors are closed, and before the exit: the
    launcher ends, and containerd sees the action's output end, without waiting for this large
    process's teardown (its address space goes before its descriptors, kernel/exit.c do_exit).
    The zygote reports a death by signal."""
    def finish(status: int) -> NoReturn:
        try:
            _flush()
            for fd in (0, 1, 2):
                os.close(fd)
            send_status(conn, (status & 0xFF) << 8)  # as waitpid(2) encodes an exit code
        finally:
            os._exit(status)

    code = 1
    try:
        probe = select.poll()
        probe.register(conn, 0)
        if probe.poll(0) or not _answer(conn, STARTED):
            # The launcher hung up (it gave up waiting, and runs the action itself): not run.
            code = 0
        else:
            for target, fd in enumerate(fds):
                os.dup2(fd, target)  # inheritable, as the process's standard descriptors are
            for fd in fds:
                if fd > 2:
                    os.close(fd)
            fds = []
            import shim.cli

            shim.cli.end = finish  # start and delete end through it (cli._exit)
            code = _become(invocation, code_key)
    finally:
        for fd in fds:
            os.close(fd)
        finish(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _become(invocation: Invocation, code_key: str) -> int:
    _reset_logging()
    from shim import proctitle, zygote_client

    zygote_client.checked_key = code_key  # checked just before the action began
    os.umask(invocation.umask)
    os.environ.clear()
    os.environ.update(invocation.env)
    argv = [proctitle.DAEMON_NAME, *invocation.argv[1:]]
    sys.argv = argv
    # `ps` shows the action as the Python launcher's would, not as a zygote.
    proctitle.set_title(" ".join(argv), comm=proctitle.DAEMON_NAME[:15])
    try:
        os.chdir(invocation.cwd)
    except OSError as exc:
        sys.stderr.write(f"{proctitle.DAEMON_NAME}: cannot enter {invocation.cwd}: "
                         f"{exc.strerror}\n")
        return 1
    return _main()


def _main() -> int:
    """``shim.cli.main`` with the interpreter's handling of how it ends."""
    from shim.cli import main

    try:
        main()
        return 0
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code & 0xFF
        sys.stderr.write(f"{exc.code}\n")
        return 1
    except BaseException:
        import traceback

        traceback.print_exc()
        return 1


def _reset_logging() -> None:
    """As in a new interpreter: no handler (warnings reach stderr through logging's last
    resort), so an action's records do not land in the zygote's log."""
    root = logging.getLogger()
    root.handlers = []
    root.setLevel(logging.WARNING)


class RelaySocket:
    """The relay's listening socket at ``<root>/<relay_name>``. A zygote takes the name over
    when it starts (bind to a private name, then rename over it) and gives it up only if it is
    still its own; both under an flock, so a zygote that ends never removes its successor's."""

    def __init__(self, directory: str, name: str) -> None:
        self.path = os.path.join(directory, name)
        self._lock = self.path + ".lock"
        self._ident: tuple[int, int] | None = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        tmp = f"{self.path}.{os.getpid()}"
        try:
            _unlink(tmp)
            self.sock.bind(tmp)
            os.chmod(tmp, 0o600)
            self.sock.listen(128)
            with self._locked():
                os.rename(tmp, self.path)
                st = os.stat(self.path)
                self._ident = (st.st_dev, st.st_ino)
        except BaseException:
            self.sock.close()
            _unlink(tmp)
            raise

    def _locked(self) -> _Flock:
        return _Flock(self._lock)

    def release(self) -> None:
        """Remove the socket file if it is still this zygote's; the socket stays open (a
        launcher that connected already is still answered)."""
        if self._ident is None:
            return
        with self._locked():
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._ident:
                    os.unlink(self.path)
            except FileNotFoundError:
                pass
        self._ident = None

    def close(self) -> None:
        self.release()
        self.sock.close()


class _Flock:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def __enter__(self) -> _Flock:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing drops the lock


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
