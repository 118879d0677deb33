"""The ``start`` side of the zygote (shim/zygote.py): find it, ask it, or start it.

Runs inside every ``start``, so it imports only ``_socket``, ``os`` and ``sys`` (``socket``,
``json`` and ``typing`` cost 5-10 ms each to import here, and even ``array`` 1.7 ms, for the
``collections.abc`` it loads) and encodes its request with a small JSON writer of its own.
"""

from __future__ import annotations

import _socket
import os
import sys

_PACKAGES = ("shim", "runtime", "storage", "network", "protos")

#: The key of the code this process runs, once checked by the zygote that forked it (an action
#: run through the relay, shim/zygote.py): that action need not compute it again.
checked_key: str | None = None


def _base() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def code_key() -> str:
    if checked_key is not None:
        return checked_key
    base = _base()
    newest = 0.0
    for pkg in _PACKAGES:
        newest = _newest_mtime(os.path.join(base, pkg), newest)
    from shim.cli import VERSION

    raw = f"{sys.executable}|{VERSION}|{newest}".encode()
    from shim.manager import _sha256

    return _sha256(raw)[:16]


def _newest_mtime(directory: str, newest: float) -> float:
    """The newest mtime of the ``.py`` files below ``directory``. One scandir per package
    directory and one stat per source file; ``__pycache__`` (no sources) is not entered:
    os.walk there took twice as long (~1.2 ms per ``start``, measured)."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(".py"):
                newest = max(newest, entry.stat().st_mtime)
            elif entry.name != "__pycache__" and entry.is_dir(follow_symlinks=False):
                newest = _newest_mtime(entry.path, newest)
    return newest


def package_dirs(base: str | None = None) -> list[str]:
    """Every directory :func:`code_key` looks into (the zygote watches them,
    shim/codewatch.py)."""
    out: list[str] = []

    def walk(directory: str) -> None:
        out.append(directory)
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name != "__pycache__" and entry.is_dir(follow_symlinks=False):
                    walk(entry.path)

    for pkg in _PACKAGES:
        walk(os.path.join(base or _base(), pkg))
    return out


def socket_path() -> str:
    from runtime import paths

    return os.path.join(paths.root(), f"zygote-{code_key()}.sock")


def relay_name(executable: str | None = None, base: str | None = None) -> str:
    """The file name (under the state root) of the relay socket that the compiled launcher
    (shim/launcher/lxcri-launcher.c) dials: keyed by the installation (interpreter and project
    directory), not by the code's mtimes, since the launcher is built once, at set-up, while the
    code may change under it; the zygote checks the code per request. packaging/setup.sh and
    build-deb.sh ask this function for the name they build into the launcher."""
    raw = f"{executable or sys.executable}|{base or _base()}".encode()
    from shim.manager import _sha256

    return f"relay-{_sha256(raw)[:16]}.sock"


def request(path: str, listen: _socket.socket, payload: dict[str, object],
            timeout: float = 5.0) -> bool:
    """Ask the zygote at ``path`` to fork a daemon for ``listen``; False if none answers.

    Runs in ``start``: ``_socket`` and a hand-written JSON encoder keep it import-light."""
    conn = connect(path, timeout)
    return conn is not None and hand_over(conn, listen, dumps(payload).encode())


def connect(path: str, timeout: float = 5.0) -> _socket.socket | None:
    """A connection to the zygote at ``path``, or None if none answers. ``start`` opens it
    before it binds the task's socket, so that little happens between the bind and
    :func:`hand_over`: a ``start`` that containerd kills in between leaves the socket file
    with nobody to remove it (containerd runs no ``delete`` after a failed ``start``)."""
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None
    return conn


def hand_over(conn: _socket.socket, listen: _socket.socket, request: bytes) -> bool:
    """Send the encoded request with ``listen``'s fd on ``conn`` (then closed); True once the
    zygote answers that the daemon is forked. From the send on, the zygote owns the socket."""
    try:
        # SCM_RIGHTS carries an array of C ints (cmsg(3)): one, in native byte order.
        fd = listen.fileno().to_bytes(4, sys.byteorder)
        conn.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd)])
        conn.shutdown(_socket.SHUT_WR)
        return conn.recv(16) == b"ok"
    except OSError:
        return False
    finally:
        conn.close()


def dumps(value: object) -> str:
    """JSON for the request's strings, booleans, numbers, None and dicts (RFC 8259 string
    escapes); ``json`` itself costs ~9 ms to import on the critical path."""
    if isinstance(value, str):
        out = value.replace("\\", "\\\\").replace('"', '\\"')
        if any(ord(ch) < 0x20 for ch in out):
            out = "".join(ch if ord(ch) >= 0x20 else f"\\u{ord(ch):04x}" for ch in out)
        return f'"{out}"'
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot encode {type(value).__name__}")


# The zygote imports the project from where this `start` did (argv[2]), so that the code it
# runs is the code its key describes, whatever else is on the interpreter's path.
_MAIN = ("import sys; sys.dont_write_bytecode = False; sys.path.insert(0, sys.argv[2]); "
         "from shim.zygote import main; main()")



def spawn(path: str) -> None:
    """Start a zygote for ``path`` in the background (detached; never holds ``start``'s
    pipes). A concurrent ``start`` that also spawns one loses the bind and its zygote exits."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)  # the intermediate child exits at once; the zygote is orphaned
        return
    code = 1
    try:
        os.setsid()
        if os.fork():
            code = 0
            return
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        # A fresh interpreter: nothing of `start` stays open (above all the task's listening
        # socket, which is close-on-exec) and its command line names no task.
        # The last argument is room: the zygote and the daemons it forks rename themselves
        # for `ps` (shim/proctitle.py) within the argv area they inherit, and a daemon's name
        # (a CRI id has 64 characters, then the namespace and containerd's socket) can be
        # longer than this command line.
        os.execv(sys.executable, [sys.executable, "-c", _MAIN, path, _base(), " " * 160])
    finally:
        os._exit(code)
