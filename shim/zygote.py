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

The zygote also runs the ``start`` and ``delete`` actions themselves for the compiled launcher
that containerd executes (shim/launcher/lxcri-launcher.c, shim/zygote_relay.py): each in a fork,
so that no action waits for an interpreter to start.
"""

from __future__ import annotations

import array
import gc
import json
import logging
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from shim.codewatch import CodeWatch
    from shim.zygote_relay import RelaySocket

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
    from shim.codewatch import open_watch
    from shim.manager import listen_unix
    from shim.zygote_client import code_key, relay_name
    from shim.zygote_relay import RelaySocket

    raw = listen_unix(path)
    if raw is None:
        return  # another zygote serves this code already
    sock = socket.socket(fileno=raw.detach())
    relay: RelaySocket | None = None
    # Watched before the key is checked again: a change in between is seen either way.
    watch = open_watch()
    try:
        if code_key() != _key():
            log.info("the code changed while the zygote %s started: it ends", _key())
            return
        _preload()
        # Everything imported so far lives as long as the zygote: out of the collector's
        # sight, a collection in a forked daemon never writes to (and so copies) these shared
        # pages. The pattern CPython documents for gc.freeze (fork servers).
        gc.freeze()
        try:
            # The compiled launcher's way in: this zygote is the newest of its installation.
            relay = RelaySocket(os.path.dirname(path), relay_name())
        except OSError as exc:
            log.error("cannot listen for the launcher: %s", exc)  # it runs actions itself
        _Server(path, sock, relay, watch).run()
    finally:
        _unlink(path)
        sock.close()
        if relay is not None:
            relay.close()
        if watch is not None:
            watch.close()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@dataclass
class _Action:
    """An action run for the compiled launcher: its process and the launcher's connection."""

    pid: int
    pidfd: int
    conn: socket.socket
    killed: bool = False


#: The zygote's own descriptors that no process it forks may keep (a spare or daemon lives as
#: long as its task): the relay socket and the running actions' connections and pidfds.
_private: list[socket.socket | int] = []


def _drop_private(keep: socket.socket | None = None) -> None:
    for item in _private:
        if item is keep:
            continue
        try:
            item.close() if isinstance(item, socket.socket) else os.close(item)
        except OSError:
            pass
    _private.clear()


class _Server:
    """The zygote's loop (one thread, no event loop, so forking stays safe).

    - Keep one spare daemon waiting on ``sock`` (it takes the next request itself and tells us,
      :func:`_spare`); fork another once no request came for :data:`SPARE_DELAY` and no action
      runs: forking it (and its first page faults) takes CPU that the daemon just taken and
      containerd need. Without a spare (forking one failed, or spares kept dying) serve each
      request on ``sock`` here, forking its daemon then.
    - Keep one runner waiting on the compiled launcher's ``relay`` socket (shim/zygote_relay.py)
      the same way: it takes the next request and runs its action itself. Without one, fork a
      process per request. Either way the action reports its own exit status to its launcher;
      the zygote reports a death by signal, and kills an action whose launcher hangs up, as
      killing the action's own process would.
    - Exit after :data:`IDLE_EXIT` seconds without a request, or at once (after the running
      actions) when a launcher's request shows that newer code is installed."""

    def __init__(self, path: str, sock: socket.socket, relay: RelaySocket | None,
                 watch: CodeWatch | None) -> None:
        self.path, self.sock, self.relay, self.watch = path, sock, relay, watch
        self.key = _key()
        self.spare = _Helper("spare daemon")
        self.runner = _Helper("runner")
        self.last = time.monotonic()
        self.actions: dict[int, _Action] = {}
        self.closing = False

    def run(self) -> None:
        try:
            self._loop()
        finally:
            self.spare.close()  # ends the spare
            self.runner.close()

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            if not self.closing and not self.actions:
                if self.spare.due(now):
                    self._set_private()
                    self.spare.forked(_fork_spare(self.sock), now)
                if self.relay is not None and self.runner.due(now):
                    self._set_private()
                    self.runner.forked(
                        _fork_runner(self.relay.sock, self.key, self.watch is None), now)
            if self.closing and not self.actions:
                return
            poll = select.poll()
            if not self.closing:
                if self.watch is not None:
                    poll.register(self.watch, select.POLLIN)
                poll.register(self.spare.pair or self.sock, select.POLLIN)
                if self.relay is not None:
                    poll.register(self.runner.pair or self.relay.sock, select.POLLIN)
            for action in self.actions.values():
                poll.register(action.pidfd, select.POLLIN)
                if not action.killed:
                    poll.register(action.conn, 0)  # POLLHUP: the launcher is gone
            timeout: float | None = None
            if not self.actions:
                timeout = min(self.last + IDLE_EXIT, self.spare.next_due(),
                              self.runner.next_due()) - now
            events = poll.poll(None if timeout is None else max(0, int(timeout * 1000) + 1))
            if not events:
                if not self.actions and time.monotonic() >= self.last + IDLE_EXIT:
                    # Idle: the socket files go first, so no `start` dials them any more;
                    # closing the pairs then ends the spare and the runner (which still serve
                    # a connection already queued, see _next_connection).
                    self._stop_listening()
                    return
                continue
            for fd, _mask in events:
                self._dispatch(fd)

    def _dispatch(self, fd: int) -> None:
        if fd in self.actions:
            self._finish(self.actions.pop(fd))
            return
        for action in self.actions.values():
            if fd == action.conn.fileno():
                self._launcher_gone(action)
                return
        now = time.monotonic()
        if self.watch is not None and fd == self.watch.fileno():
            if self.watch.changed():
                self._newer_code()
        elif self.spare.pair is not None and fd == self.spare.pair.fileno():
            self.last = now
            self.spare.taken(self.spare.pair.recv(1) == TAKEN, now)
        elif self.runner.pair is not None and fd == self.runner.pair.fileno():
            self.last = now
            self._runner_done(now)
        elif self.relay is not None and fd == self.relay.sock.fileno():
            self.last = now
            self.runner.delay(now)
            self._relay()
        elif fd == self.sock.fileno():
            self.last = now
            self.spare.delay(now)
            self._serve_one()

    def _serve_one(self) -> None:
        """A `start` that found no spare: fork its daemon here."""
        self.sock.settimeout(0)
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        with conn:
            self._set_private()
            _handle(conn, self.sock)

    def _runner_done(self, now: float) -> None:
        """The runner took a request (its launcher's connection comes along, so that a death
        by signal can be reported), or found newer code installed, or died."""
        pair, pid = self.runner.pair, self.runner.pid
        assert pair is not None
        fds = array.array("i")
        try:
            msg, ancdata, _flags, _addr = pair.recvmsg(1, socket.CMSG_SPACE(fds.itemsize))
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
        except OSError:
            msg = b""
        if msg == TAKEN and len(fds) == 1:
            self.runner.taken(True, now)
            action = _Action(pid, os.pidfd_open(pid), socket.socket(fileno=fds[0]))
            self.actions[action.pidfd] = action
            return
        for fd in fds:
            os.close(fd)
        if msg == STALE:
            self.runner.taken(True, now)
            self._newer_code()
        elif msg == TAKEN:  # a bad request, consumed
            self.runner.taken(True, now)
        else:
            self.runner.taken(False, now)
        os.waitpid(pid, 0)  # it ends right after that message (or has ended)

    def _relay(self) -> None:
        """A launcher's request while no runner waits: fork a process for it."""
        from shim import zygote_client, zygote_relay

        assert self.relay is not None
        self.relay.sock.settimeout(0)
        try:
            conn, _ = self.relay.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        try:
            invocation, fds = zygote_relay.receive(conn)
        except zygote_relay.BadRequest as exc:
            log.error("bad request from the launcher: %s", exc)
            conn.close()
            return
        try:
            if self.watch is None and zygote_client.code_key() != self.key:
                zygote_relay.decline(conn)
                conn.close()
                self._newer_code()
                return
            self._set_private(conn)
            try:
                pid = os.fork()
            except OSError as exc:
                log.error("cannot fork an action: %s", exc)
                zygote_relay.decline(conn)  # the launcher runs it itself
                conn.close()
                return
            if pid == 0:
                _drop_private(keep=conn)
                zygote_relay.run(invocation, fds, self.key, conn)  # never returns
        finally:
            for fd in fds:
                os.close(fd)
        action = _Action(pid, os.pidfd_open(pid), conn)
        self.actions[action.pidfd] = action

    def _newer_code(self) -> None:
        # A launcher runs the action itself, with the new code, which starts a zygote for it.
        log.info("the code changed: the zygote %s ends", self.key)
        self.closing = True
        self._stop_listening()

    def _finish(self, action: _Action) -> None:
        _, status = os.waitpid(action.pid, 0)
        os.close(action.pidfd)
        with action.conn:
            if os.WIFSIGNALED(status) and not action.killed:
                # An action that ends normally has reported its status itself.
                from shim.zygote_relay import send_status

                send_status(action.conn, status)

    def _launcher_gone(self, action: _Action) -> None:
        if not action.killed:
            action.killed = True
            try:
                signal.pidfd_send_signal(action.pidfd, signal.SIGKILL)
            except OSError:
                pass  # it has ended already: its pidfd reports that next

    def _stop_listening(self) -> None:
        _unlink(self.path)
        if self.relay is not None:
            self.relay.release()

    def _set_private(self, *extra: socket.socket) -> None:
        """What the next fork must close (_drop_private): the relay socket, every action's
        connection and pidfd, and the helpers' pairs; the main socket only for an action."""
        _private.clear()
        if self.relay is not None:
            _private.append(self.relay.sock)
        if self.watch is not None:
            _private.append(self.watch.fd)
        for action in self.actions.values():
            _private.extend((action.conn, action.pidfd))
        _private.extend(h.pair for h in (self.spare, self.runner) if h.pair is not None)
        if extra:  # an action: nor does it keep the zygote's socket
            _private.append(self.sock)
        _private.extend(extra)


class _Helper:
    """A process forked ahead of its request (the spare daemon or the runner) as the zygote
    sees it: our end of its pair, when the next may be forked, and how many died in a row."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.pair: socket.socket | None = None
        self.pid = 0
        self.failures = 0
        self.at = 0.0  # the next may be forked from then on

    def wanted(self) -> bool:
        return self.pair is None and self.failures < SPARE_FAILURES

    def due(self, now: float) -> bool:
        return self.wanted() and now >= self.at

    def next_due(self) -> float:
        return self.at if self.wanted() else float("inf")

    def delay(self, now: float) -> None:
        """A request was served without a helper: fork the next once it is quiet again."""
        self.at = now + SPARE_DELAY

    def forked(self, helper: tuple[socket.socket, int] | None, now: float) -> None:
        if helper is None:
            self.failures += 1
            self.delay(now)
        else:
            self.pair, self.pid = helper

    def taken(self, ok: bool, now: float) -> None:
        assert self.pair is not None
        self.pair.close()
        self.pair = None
        self.delay(now)
        if ok:
            self.failures = 0
        else:
            self.failures += 1
            log.error("the %s exited without taking a request (%d in a row)", self.what,
                      self.failures)

    def close(self) -> None:
        if self.pair is not None:
            self.pair.close()
            self.pair = None


#: How long the zygote waits after a spare was taken before it forks the next (seconds).
SPARE_DELAY = 0.05
#: What a spare or a runner sends the zygote when it has taken a request.
TAKEN = b"t"
#: What a runner sends the zygote when the request showed that newer code is installed.
STALE = b"s"
#: ``comm`` of a runner.
RUNNER_COMM = "lxcri-runner"
#: Spares that die without taking a request, in a row, before the zygote forks per request.
SPARE_FAILURES = 3
#: ``comm`` of a spare (the zygote's is proctitle.ZYGOTE_COMM): ``ps`` tells them apart.
SPARE_COMM = "lxcri-spare"


def _fork_with_pair(what: str,
                    child: Callable[[socket.socket], NoReturn]) -> tuple[socket.socket, int] | None:
    """Fork ``child`` with its end of a new socket pair; our end and its pid, or None (logged)
    when it could not be forked."""
    ours, theirs = socket.socketpair()
    try:
        pid = os.fork()
    except OSError as exc:
        log.error("cannot fork a %s: %s", what, exc)
        ours.close()
        theirs.close()
        return None
    if pid == 0:
        ours.close()
        child(theirs)  # never returns
    theirs.close()
    return ours, pid


def _fork_spare(server: socket.socket) -> tuple[socket.socket, int] | None:
    """Our end of a spare daemon's pair (the spare is re-parented to init, like every daemon,
    so the pid is the intermediate's, reaped already), or None when it could not be forked."""
    forked = _fork_with_pair("spare daemon", lambda pair: _spare(server, pair))
    if forked is None:
        return None
    _, status = os.waitpid(forked[1], 0)  # the intermediate exits once the spare is forked
    if status != 0:
        log.error("forking a spare daemon failed (status %#x)", status)
        forked[0].close()
        return None
    return forked


def _fork_runner(relay: socket.socket, key: str,
                 check_key: bool) -> tuple[socket.socket, int] | None:
    """A runner (our child: we reap it and report its death by signal) and our end of its
    pair, or None when it could not be forked."""

    def child(pair: socket.socket) -> NoReturn:
        code = 1
        try:
            _drop_private(keep=relay)
            code = _runner(relay, pair, key, check_key)
        except BaseException:
            log.exception("runner failed")
        finally:
            os._exit(code)

    return _fork_with_pair("runner", child)


def _runner(relay: socket.socket, pair: socket.socket, key: str, check_key: bool) -> int:
    """Forked before its request: takes the next launcher request on ``relay`` and runs its
    action (shim/zygote_relay.py), so that no fork happens while containerd waits. Tells the
    zygote (which forks the next) with the launcher's connection attached, or that the code
    changed (``check_key``: checked here, when the zygote cannot watch it, shim/codewatch.py).
    Exits when the zygote goes (EOF on ``pair``)."""
    from shim import proctitle, zygote_client, zygote_relay

    proctitle.set_title(f"{proctitle.ZYGOTE_NAME} {key} runner", comm=RUNNER_COMM)
    conn = _next_connection(relay, pair)
    relay.close()
    if conn is None:
        return 0  # the zygote is gone
    try:
        invocation, fds = zygote_relay.receive(conn)
    except zygote_relay.BadRequest as exc:
        log.error("bad request from the launcher: %s", exc)
        _tell(pair, TAKEN)  # consumed: the zygote forks the next runner
        return 1
    if check_key and zygote_client.code_key() != key:
        zygote_relay.decline(conn)
        for fd in fds:
            os.close(fd)
        _tell(pair, STALE)
        return 0
    _tell(pair, TAKEN, conn.fileno())
    pair.close()
    zygote_relay.run(invocation, fds, key, conn)  # never returns


def _tell(pair: socket.socket, what: bytes, fd: int | None = None) -> None:
    try:
        if fd is None:
            pair.send(what)
        else:
            fds = fd.to_bytes(4, sys.byteorder)  # one C int (cmsg(3))
            pair.sendmsg([what], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    except OSError:
        pass  # the zygote is gone: nobody forks the next runner; this request is still served


def _spare(server: socket.socket, pair: socket.socket) -> NoReturn:
    """A daemon forked before its request: it waits on the zygote's socket for the next
    ``start``, so that neither the forks nor the event loop's creation happen while containerd
    waits. It takes the request itself, tells the zygote (which forks the next spare), answers
    ``ok`` and becomes that task's daemon. It exits when the zygote goes (EOF on ``pair``)."""
    code = 1
    try:
        _drop_private()
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
        _drop_private()
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
