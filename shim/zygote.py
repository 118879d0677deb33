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
import json
import logging
import os
import socket
import sys
from pathlib import Path

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
    sock.settimeout(IDLE_EXIT)
    try:
        while True:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                return
            with conn:
                _handle(conn, sock)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock.close()


def _preload() -> None:
    """Import what every daemon needs (its heavy part), so forks start warm."""
    from shim.slim import import_asyncio_without_tls

    import_asyncio_without_tls()

    import network.provisioner  # noqa: F401
    import runtime.lxc.backend  # noqa: F401
    import shim.daemon  # noqa: F401
    import shim.events  # noqa: F401
    import shim.idle  # noqa: F401
    import shim.status_map  # noqa: F401
    import shim.task_service  # noqa: F401
    import storage.provisioner  # noqa: F401


def _handle(conn: socket.socket, server: socket.socket) -> None:
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
        return
    if len(fds) != 1 or not isinstance(payload, dict):
        log.error("bad request: %d file descriptors, payload %s", len(fds),
                  type(payload).__name__)
        for fd in fds:
            os.close(fd)
        return
    listen_fd = fds[0]
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


def _become_daemon(conn: socket.socket, listen_fd: int, payload: dict[str, object]) -> None:
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
            raise
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        from shim.daemon import run
        from shim.flags import Flags

        listen = socket.socket(fileno=listen_fd)
        run(flags=Flags.from_dict(flags), bundle=Path(bundle), sock=listen,
            socket_path=str(payload["socket_path"]))
        code = 0
    except BaseException:
        # Before run() took over logging this reaches the zygote's log; after, containerd's.
        log.exception("daemon for bundle %s failed", payload.get("bundle"))
    finally:
        os._exit(code)
