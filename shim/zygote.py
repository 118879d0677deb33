"""A per-node fork server that keeps the daemon's modules imported.

Starting a shim daemon means importing asyncio, protobuf and the runtime (~70-100 ms here,
DESIGN.md section 10), and containerd's Create waits for it. The zygote pays that once: it
imports everything, then for each request forks a daemon that shares those pages copy-on-write
(the pattern of Python's multiprocessing forkserver). ``start`` asks it (shim/zygote_client.py),
passing the task's listening socket with SCM_RIGHTS; when no zygote answers, ``start`` forks the
daemon itself (the fallback is always correct, only slower) and starts a zygote for next time.

The zygote runs no event loop and no threads, so forking it is safe. It is keyed by the code it
imported (interpreter, version and the newest source mtime), so an upgraded or edited runtime
never serves a stale one, and it exits after :data:`IDLE_EXIT` seconds without a request.
Protocol: one request per connection, a JSON object plus one fd; the answer is ``ok`` once the
daemon is forked.
"""

from __future__ import annotations

import array
import gc
import json
import logging
import os
import select
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import asyncio

IDLE_EXIT = 600.0
_MAX_MSG = 1 << 16


log = logging.getLogger("shim.zygote")

#: The zygote's log under the state root (containerd reads no log of the zygote's own): logfmt,
#: bounded (shim/log.py rotates it to ``zygote.log.1`` at 1 MiB).
LOG_FILE = "zygote.log"


def log_path() -> Path:
    from runtime import paths

    return Path(paths.root()) / "runtime" / LOG_FILE


def main() -> None:
    from shim import log as shimlog
    from shim import proctitle

    path = sys.argv[1]
    shimlog.setup_file(log_path())
    key = os.path.basename(path).removeprefix("zygote-").removesuffix(".sock")
    proctitle.set_title(proctitle.zygote_title(key), comm=proctitle.ZYGOTE_COMM)
    try:
        serve(path)
    except Exception:
        log.exception("zygote %s failed", path)
        raise


def serve(path: str) -> None:
    from shim.manager import listen_unix

    raw = listen_unix(path)
    if raw is None:
        return  # another zygote serves this code already
    sock = socket.socket(fileno=raw.detach())
    _preload()
    # Everything imported so far lives as long as the zygote: out of the collector's sight, a
    # collection in a forked daemon never writes to (and so copies) these shared pages. The
    # pattern CPython documents for gc.freeze (fork servers).
    gc.freeze()
    try:
        _serve_requests(path, sock)
    finally:
        _unlink(path)
        sock.close()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _serve_requests(path: str, sock: socket.socket) -> None:
    """Keep one spare daemon waiting on ``sock`` (it takes the next request itself and tells
    us, :func:`_spare`); fork another whenever one is taken. Without a spare (forking one
    failed, or spares kept dying) serve each request here, forking its daemon then."""
    failures = 0
    while True:
        pair = _fork_spare(sock) if failures < SPARE_FAILURES else None
        if pair is None:
            if not _serve_one(sock, IDLE_EXIT):
                return
            continue
        with pair:
            pair.settimeout(IDLE_EXIT)
            try:
                taken = pair.recv(1) == TAKEN
            except TimeoutError:
                # Idle: the socket file goes first, so no `start` dials it any more; closing
                # the pair then ends the spare (which still serves a connection already
                # queued, see _next_connection).
                _unlink(path)
                return
            except OSError:
                taken = False
        if taken:
            failures = 0
            _serve_until_quiet(sock)
        else:
            failures += 1
            log.error("the spare daemon exited without taking a request (%d in a row)",
                      failures)


def _serve_until_quiet(sock: socket.socket) -> None:
    """The next spare is forked once no request came for :data:`SPARE_DELAY`: forking it
    (and its first page faults) takes CPU that the daemon just taken and containerd need to
    start the task. A request in the meantime is served here, the way without a spare."""
    while _serve_one(sock, SPARE_DELAY):
        pass


def _serve_one(sock: socket.socket, timeout: float) -> bool:
    """Serve the next request here; False if none came within ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        return False
    with conn:
        _handle(conn, sock)
    return True


#: How long the zygote waits after a spare was taken before it forks the next (seconds).
SPARE_DELAY = 0.05
#: What a spare sends the zygote when it has taken a request.
TAKEN = b"t"
#: Spares that die without taking a request, in a row, before the zygote forks per request.
SPARE_FAILURES = 3
#: ``comm`` of a spare (the zygote's is proctitle.ZYGOTE_COMM): ``ps`` tells them apart.
SPARE_COMM = "lxcri-spare"


def _fork_spare(server: socket.socket) -> socket.socket | None:
    """A spare daemon (re-parented to init, like every daemon) and our end of its pair, or
    None when it could not be forked."""
    ours, theirs = socket.socketpair()
    try:
        pid = os.fork()
    except OSError as exc:
        log.error("cannot fork a spare daemon: %s", exc)
        ours.close()
        theirs.close()
        return None
    if pid == 0:
        ours.close()
        _spare(server, theirs)  # never returns
    theirs.close()
    _, status = os.waitpid(pid, 0)  # the intermediate child exits once the spare is forked
    if status != 0:
        log.error("forking a spare daemon failed (status %#x)", status)
        ours.close()
        return None
    return ours


def _spare(server: socket.socket, pair: socket.socket) -> NoReturn:
    """A daemon forked before its request: it waits on the zygote's socket for the next
    ``start``, so that neither the forks nor the event loop's creation happen while containerd
    waits. It takes the request itself, tells the zygote (which forks the next spare), answers
    ``ok`` and becomes that task's daemon. It exits when the zygote goes (EOF on ``pair``)."""
    code = 1
    try:
        os.setsid()
        if os.fork():  # re-parent the spare to init, like a shim `start` forks its daemon
            code = 0
        else:
            code = _spare_serve(server, pair)
    except BaseException:
        log.exception("spare daemon failed")
    finally:
        os._exit(code)


def _spare_serve(server: socket.socket, pair: socket.socket) -> int:
    import asyncio

    from shim import proctitle

    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    proctitle.set_title(f"{proctitle.ZYGOTE_NAME} {_key()} spare", comm=SPARE_COMM)
    loop = asyncio.new_event_loop()
    conn = _next_connection(server, pair)
    server.close()
    if conn is None:
        return 0  # the zygote is gone
    try:
        pair.send(TAKEN)
    except OSError:
        pass  # the zygote is gone: nobody forks the next spare; this request is still served
    pair.close()
    with conn:
        request = _receive(conn)
        if request is None:
            return 1
        payload, listen_fd = request
        # Logged before the answer, as the zygote logs a daemon it forks before it answers:
        # once the task is up, its daemon is in the zygote's log.
        log.info("daemon %d started for bundle %s", os.getpid(), payload.get("bundle"),
                 extra={"daemon_pid": os.getpid()})
        try:
            conn.sendall(b"ok")
        except OSError:
            pass
    _run_daemon(listen_fd, payload, loop)
    return 0


def _key() -> str:
    return os.path.basename(sys.argv[1]).removeprefix("zygote-").removesuffix(".sock")


def _next_connection(server: socket.socket, pair: socket.socket) -> socket.socket | None:
    """The next connection on the zygote's socket, or None once the zygote is gone. A
    connection already queued when it went is still taken: its `start` waits for an answer."""
    server.setblocking(False)
    poll = select.poll()
    poll.register(server, select.POLLIN)
    poll.register(pair, select.POLLIN)
    while True:
        ready = dict(poll.poll())
        try:
            conn, _ = server.accept()
            return conn
        except BlockingIOError:
            pass  # another reader took it, or a spurious wake-up
        if pair.fileno() in ready:
            return None  # EOF (or a byte, which the zygote never sends): the zygote is gone


def _preload() -> None:
    """Import what every daemon needs (its heavy part), so forks start warm."""
    from shim.slim import import_asyncio_without_tls

    import_asyncio_without_tls()

    import network.cleanup  # noqa: F401  (a task's release)
    import network.provisioner  # noqa: F401
    import runtime.lxc.backend  # noqa: F401
    import runtime.registry  # noqa: F401  (the daemon's backend by name)
    import shim.daemon  # noqa: F401
    import shim.events  # noqa: F401
    import shim.idle  # noqa: F401
    import shim.status_map  # noqa: F401
    import shim.task_service  # noqa: F401
    import storage.provisioner  # noqa: F401


def _receive(conn: socket.socket) -> tuple[dict[str, Any], int] | None:
    """The request on ``conn``: its JSON object and the listening socket's fd; None (logged)
    when it is malformed."""
    conn.settimeout(5.0)
    fds = array.array("i")
    try:
        data, ancdata, _flags, _addr = conn.recvmsg(_MAX_MSG, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
        payload = json.loads(data)
    except (OSError, ValueError) as exc:
        log.error("bad request: %s", exc)
        for fd in fds:
            os.close(fd)
        return None
    if len(fds) != 1 or not isinstance(payload, dict):
        log.error("bad request: %d file descriptors, payload %s", len(fds),
                  type(payload).__name__)
        for fd in fds:
            os.close(fd)
        return None
    return payload, fds[0]


def _handle(conn: socket.socket, server: socket.socket) -> None:
    """One request without a spare: fork its daemon here, answer ``ok`` once it exists."""
    request = _receive(conn)
    if request is None:
        return
    payload, listen_fd = request
    try:
        pid = os.fork()
    except OSError as exc:
        log.error("cannot fork a daemon: %s", exc)
        os.close(listen_fd)
        return
    if pid == 0:
        server.close()  # the daemon must not keep the zygote's socket
        _become_daemon(conn, listen_fd, payload)
    os.close(listen_fd)
    _, status = os.waitpid(pid, 0)  # the intermediate child exits once the daemon is forked
    if status != 0:
        log.error("starting the daemon for %s failed (status %#x)", payload.get("socket_path"),
                  status)
        return  # no "ok": `start` then forks the daemon itself
    try:
        conn.sendall(b"ok")
    except OSError:
        pass


def _become_daemon(conn: socket.socket, listen_fd: int, payload: dict[str, Any]) -> None:
    code = 1
    try:
        conn.close()
        os.setsid()
        daemon = os.fork()
        if daemon:  # re-parent the daemon to init, like a shim `start` forks it
            log.info("daemon %d started for bundle %s", daemon, payload.get("bundle"),
                     extra={"daemon_pid": daemon})
            code = 0
            return
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        _run_daemon(listen_fd, payload)
        code = 0
    except BaseException:
        # Before run() took over logging this reaches the zygote's log; after, containerd's.
        log.exception("daemon for bundle %s failed", payload.get("bundle"))
    finally:
        os._exit(code)


def _run_daemon(listen_fd: int, payload: dict[str, Any],
                loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Be the daemon ``payload`` asks for, serving on ``listen_fd``; returns when it ends."""
    env, bundle, flags = payload["env"], str(payload["bundle"]), payload["flags"]
    assert isinstance(env, dict) and isinstance(flags, dict)
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in env.items()})
    try:
        os.chdir(bundle)
    except OSError:
        # containerd gave the task up (and removed the bundle) while `start` ran: no
        # daemon, and no socket file left for nobody (it runs no `delete` then).
        from shim.daemon import remove_socket

        remove_socket(str(payload["socket_path"]))
        os.close(listen_fd)
        raise
    from shim.daemon import run
    from shim.flags import Flags

    listen = socket.socket(fileno=listen_fd)
    run(flags=Flags.from_dict(flags), bundle=Path(bundle), sock=listen,
        socket_path=str(payload["socket_path"]), loop=loop)
