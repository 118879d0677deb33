"""The short-lived ``start`` and ``delete`` actions (shim-protocol.md 2.3, 2.4, 2.7).

Standard library only. ``start`` binds the task's socket, forks the daemon (the ``start``
process is single-threaded, so fork is safe, and it saves a second interpreter start-up), writes
``address`` and prints the address alone. ``delete`` cleans up after a task whose shim is gone
(or after every task: containerd runs it on each closed connection) and prints a DeleteResponse.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

from shim.flags import Flags

SOCKET_DIR = "/run/containerd/s"
GROUP_ANNOTATIONS = ("io.kubernetes.cri.sandbox-id", "io.containerd.runc.v2.group")


def group_of(bundle: Path, id: str) -> str:
    """The shim group: the pod's sandbox id when CRI sets it, else the task id (§2.4)."""
    try:
        spec = json.loads((bundle / "config.json").read_bytes())
        ann = spec.get("annotations") or {}
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


def _bind(path: str) -> socket.socket | None:
    """Bind and listen on ``path``; None when a live shim already serves it."""
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            sock.close()
            raise
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
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


def _write_address(bundle: Path, address: str) -> None:
    # No trailing newline: containerd 1.x reads the file verbatim on restart recovery.
    tmp = bundle / ".address.tmp"
    tmp.write_text(address)
    os.replace(tmp, bundle / "address")


def start(flags: Flags) -> int:
    bundle = Path.cwd()
    try:
        sys.stdin.buffer.read()  # runtime options or, on containerd 2.3, BootstrapParams; unused
    except (OSError, ValueError):
        pass
    address = socket_address(flags.address, flags.namespace, group_of(bundle, flags.id))
    path = address.removeprefix("unix://")
    try:
        sock = _bind(path)
    except OSError as exc:
        sys.stdout.write(f"cannot listen on {path}: {exc.strerror}")
        return 1
    if sock is not None:
        _start_daemon(flags, bundle, sock, path)
        sock.close()
    _write_address(bundle, address)
    sys.stdout.write(address)
    sys.stdout.flush()
    return 0


def _start_daemon(flags: Flags, bundle: Path, sock: socket.socket, path: str) -> None:
    """Through the zygote when one serves this code (fast), else by forking ourselves; then
    make sure a zygote exists for the next task (shim/zygote.py)."""
    if os.environ.get("PROXMOX_LXCRI_ZYGOTE", "1") == "0":
        _spawn_daemon(flags, bundle, sock, path)
        return
    from shim import zygote

    zpath = zygote.socket_path()
    payload = {"flags": flags.to_dict(), "bundle": str(bundle), "socket_path": path,
               "env": dict(os.environ)}
    if not zygote.request(zpath, sock, payload):
        _spawn_daemon(flags, bundle, sock, path)
        zygote.spawn(zpath)


def _spawn_daemon(flags: Flags, bundle: Path, sock: socket.socket, path: str) -> None:
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
        from shim.daemon import run

        run(flags=flags, bundle=bundle, sock=sock, socket_path=path)
        code = 0
    finally:
        os._exit(code)


# -- delete -----------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_delete_response(pid: int, exit_status: int, exited_at: float) -> bytes:
    """containerd.task.v2.DeleteResponse{1 pid, 2 exit_status, 3 exited_at Timestamp}, by hand
    so that ``delete`` does not import protobuf (proto3: zero fields are omitted)."""
    seconds, nanos = int(exited_at), int((exited_at - int(exited_at)) * 1e9)
    ts = (b"\x08" + _varint(seconds) if seconds else b"") + (
        b"\x10" + _varint(nanos) if nanos else b"")
    out = b""
    if pid:
        out += b"\x08" + _varint(pid)
    if exit_status:
        out += b"\x10" + _varint(exit_status)
    return out + b"\x1a" + _varint(len(ts)) + ts


def delete(flags: Flags) -> int:
    from runtime import paths

    if not os.path.isdir(paths.container_dir(flags.namespace, flags.id)):
        # The daemon deleted the task and its state (the normal teardown: containerd runs
        # `delete` after every task): nothing is left to clean. Like runc's, the answer is
        # 137 and now; containerd only uses it for a task it still knows.
        sys.stdout.buffer.write(encode_delete_response(0, 137, time.time()))
        sys.stdout.flush()
        return 0
    return _delete_leftovers(flags)


def _delete_leftovers(flags: Flags) -> int:
    """Stop and release what a dead shim left: container, mounts, network, dataset."""
    from runtime.lxc.cleanup import cleanup
    from runtime.store import Store, state_root

    bundle = Path(flags.bundle) if flags.bundle else Path.cwd()
    store = Store(state_root())
    state = store.load(flags.namespace, flags.id) or {}
    state_dir = store.container_dir(flags.namespace, flags.id)
    try:
        pid, status = cleanup(state_dir, bundle)
    except OSError as exc:
        sys.stderr.write(f"cleanup of {flags.id} failed: {exc}\n")
        return 1
    # [network] the container's processes are gone: release its shim-managed network
    # (veth, namespace, lease) if the shim did not (network/cleanup.py, standard library).
    if (state_dir / "network.json").exists():
        from network.cleanup import cleanup as network_cleanup

        network_cleanup(state_dir)
    # [storage] destroy the container's ZFS dataset if the shim did not (storage/cleanup.py,
    # standard library; the backend clean-up above unmounted it from the bundle).
    if (state_dir / "storage.json").exists():
        from storage.cleanup import cleanup as storage_cleanup

        try:
            storage_cleanup(state_dir)
        except OSError as exc:
            sys.stderr.write(f"storage cleanup of {flags.id} failed: {exc}\n")
    if not pid:
        pid = int(state.get("pid") or 0)
    recorded = state.get("exit_status")
    if recorded is not None and status == 0:
        status = int(recorded)
    store.remove(flags.namespace, flags.id)
    sys.stdout.buffer.write(encode_delete_response(pid, status, time.time()))
    sys.stdout.flush()
    return 0
