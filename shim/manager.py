"""The short-lived ``start`` action (shim-protocol.md 2.3, 2.4); ``delete`` is shim.delete.

Standard library only, and only its cheap parts: it runs for every task, and importing
``socket`` (enum, selectors …), ``json`` (re) or ``hashlib`` (OpenSSL) each cost 5-10 ms here,
so it uses ``_socket`` directly and reads JSON only for a pod member. ``start`` binds the
task's socket, has the daemon started on it (by the zygote, shim/zygote.py, or by forking:
``start`` is single-threaded, so fork is safe), writes ``address`` and prints the address
alone.
"""

from __future__ import annotations

import _socket
import errno
import os
import sys

from shim.flags import Flags

SOCKET_DIR = "/run/containerd/s"
GROUP_ANNOTATIONS = ("io.kubernetes.cri.sandbox-id", "io.containerd.runc.v2.group")


def group_of(bundle: str, id: str) -> str:
    """The shim group: the pod's sandbox id when CRI sets it, else the task id (§2.4)."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            raw = f.read()
    except OSError:
        return id
    if not any(key.encode() in raw for key in GROUP_ANNOTATIONS):
        return id  # the common case needs no JSON parser
    import json

    try:
        ann = json.loads(raw).get("annotations") or {}
    except (OSError, ValueError, AttributeError):
        return id
    for key in GROUP_ANNOTATIONS:
        value = ann.get(key) if isinstance(ann, dict) else None
        if isinstance(value, str) and value:
            return value
    return id


def socket_address(containerd_address: str, namespace: str, group: str) -> str:
    """``unix://`` + a path derived from containerd's address, the namespace and the group,
    so that two containerd instances never share a shim. containerd dials anything without the
    ``unix://`` prefix as an abstract socket, so the prefix is mandatory (§2.3)."""
    digest = _sha256(os.path.join(containerd_address, namespace, group).encode())
    return f"unix://{SOCKET_DIR}/{digest}"


def _sha256(data: bytes) -> str:
    # CPython's built-in _sha256 avoids hashlib's OpenSSL load (~9 ms on every start).
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:  # another interpreter
        from hashlib import sha256
    return str(sha256(data).hexdigest())


def listen_unix(path: str) -> _socket.socket | None:
    """Bind and listen on ``path``; None when a live server (a shim of the same group, or a
    zygote) already answers there. A socket file nobody answers on is stale and replaced."""
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            sock.close()
            raise
        probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            probe.connect(path)
            sock.close()
            return None  # a live shim of this group: reuse it
        except OSError:
            os.unlink(path)  # stale socket of a dead shim
            sock.bind(path)
        finally:
            probe.close()
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def remove_stale_socket(path: str) -> bool:
    """Unlink ``path`` if it is a shim socket of ours (``SOCKET_DIR``/<sha256 hex>) that nobody
    listens on any more: a killed daemon cannot remove its own. A live one (say a pod's shim
    that still serves other tasks) is left alone. Returns True when the file was removed."""
    import stat

    name = os.path.basename(path)
    if (os.path.dirname(path) != SOCKET_DIR or len(name) != 64
            or name.strip("0123456789abcdef")):
        return False  # not a path this runtime makes: never touch it
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    probe.setblocking(False)  # a full backlog answers EAGAIN at once: alive, so kept
    try:
        probe.connect(path)
        return False
    except OSError as exc:
        if exc.errno != errno.ECONNREFUSED:
            return False
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def task_socket_path(flags: Flags, bundle: str) -> str:
    """The socket ``start`` used for this task: from the bundle's ``address`` file, else
    computed as ``start`` does (it may have been killed before writing the file)."""
    try:
        with open(os.path.join(bundle, "address")) as f:
            address = f.read().strip()
    except OSError:
        address = socket_address(flags.address, flags.namespace, group_of(bundle, flags.id))
    return address.removeprefix("unix://")


def _write_address(bundle: str, address: str) -> None:
    # No trailing newline: containerd 1.x reads the file verbatim on restart recovery.
    tmp = os.path.join(bundle, ".address.tmp")
    with open(tmp, "w") as f:
        f.write(address)
    os.replace(tmp, os.path.join(bundle, "address"))


def start(flags: Flags) -> int:
    bundle = os.getcwd()
    try:
        sys.stdin.buffer.read()  # runtime options or, on containerd 2.3, BootstrapParams; unused
    except (OSError, ValueError):
        pass
    address = socket_address(flags.address, flags.namespace, group_of(bundle, flags.id))
    path = address.removeprefix("unix://")
    # Everything slow happens before the bind: from the bind until the daemon (or the zygote)
    # holds the socket, a `start` killed by containerd leaves a socket file nobody removes.
    launcher = _Launcher(flags, bundle, path)
    try:
        sock = listen_unix(path)
    except OSError as exc:
        launcher.cancel()
        sys.stdout.write(f"cannot listen on {path}: {exc.strerror}")
        return 1
    if sock is not None:
        launcher.launch(sock)
        sock.close()
    else:
        launcher.cancel()
    _write_address(bundle, address)
    sys.stdout.write(address)
    sys.stdout.flush()
    return 0


class _Launcher:
    """Starts the daemon through the zygote when one serves this code (fast), else by forking
    ourselves, then makes sure a zygote exists for the next task (shim/zygote.py). Prepared
    (zygote found and connected, request encoded) before ``start`` binds the socket."""

    def __init__(self, flags: Flags, bundle: str, path: str) -> None:
        self.flags, self.bundle, self.path = flags, bundle, path
        self.zpath = ""
        self.conn: _socket.socket | None = None
        self.request = b""
        if os.environ.get("PROXMOX_LXCRI_ZYGOTE", "1") == "0":
            return
        from shim import zygote_client as zygote

        self.zpath = zygote.socket_path()
        payload: dict[str, object] = {"flags": flags.to_dict(), "bundle": bundle,
                                      "socket_path": path, "env": dict(os.environ)}
        self.request = zygote.dumps(payload).encode()
        self.conn = zygote.connect(self.zpath)

    def launch(self, sock: _socket.socket) -> None:
        if self.conn is not None:
            from shim import zygote_client as zygote

            conn, self.conn = self.conn, None
            if zygote.hand_over(conn, sock, self.request):
                return
        _spawn_daemon(self.flags, self.bundle, sock, self.path)
        if self.zpath:
            from shim import zygote_client as zygote

            zygote.spawn(self.zpath)

    def cancel(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _spawn_daemon(flags: Flags, bundle: str, sock: _socket.socket, path: str) -> None:
    pid = os.fork()
    if pid:
        return
    # The daemon. It must not keep containerd's combined stdout/stderr pipe open, or
    # containerd waits for EOF forever (§2.3): replace all three standard fds at once.
    code = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        import site

        site.main()  # the launcher runs with -S; the daemon needs site-packages (protobuf)
        from shim.slim import import_asyncio_without_tls

        import_asyncio_without_tls()
        import socket
        from pathlib import Path

        from shim.daemon import run

        listen = socket.socket(fileno=sock.detach())
        run(flags=flags, bundle=Path(bundle), sock=listen, socket_path=path)
        code = 0
    finally:
        os._exit(code)
