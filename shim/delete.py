"""The short-lived ``delete`` action (shim-protocol.md 2.7).

containerd runs it after *every* task (when its connection to the shim closes) and after a
shim died; it must be idempotent, print only a DeleteResponse and finish well under 5 s. In the
common case the daemon already removed the task's state and there is nothing to do, so that
path imports nothing beyond ``os``, ``sys``, ``time`` and the light ``shim.manager`` (for the
stale socket check).
"""

from __future__ import annotations

import os
import sys
import time

from shim.flags import Flags


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
    from shim.manager import remove_stale_socket, task_socket_path

    # The socket of a daemon that died (killed, or never started) stays in containerd's socket
    # directory otherwise; a live daemon's is kept (shim.manager.remove_stale_socket).
    remove_stale_socket(task_socket_path(flags, flags.bundle or os.getcwd()))
    if not os.path.isdir(paths.container_dir(flags.namespace, flags.id)):
        # The daemon deleted the task and its state (the normal teardown: containerd runs
        # `delete` after every task): nothing is left to clean. Like runc's, the answer is
        # 137 and now; containerd only uses it for a task it still knows.
        sys.stdout.buffer.write(encode_delete_response(0, 137, time.time()))
        sys.stdout.flush()
        return 0
    return _delete_leftovers(flags)


#: The whole `delete` action must finish within containerd's 5 s; hooks get what is left.
POSTSTOP_BUDGET = 3.0


def _poststop_hooks(id: str, bundle: str) -> None:
    """The spec's poststop hooks, which the dead daemon could not run (runtime.md "Lifecycle"
    step 12: after the container is deleted, failures are warnings). Within a fixed budget."""
    import json
    import subprocess

    from runtime.hooks import argv, hooks_of, state_json

    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = json.loads(f.read())
        hooks = hooks_of(spec, "poststop")
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return
    deadline = time.monotonic() + POSTSTOP_BUDGET
    state = state_json(id=id, status="stopped", pid=0, bundle=bundle,
                       annotations=spec.get("annotations") or {})
    for hook in hooks:
        left = deadline - time.monotonic()
        if left <= 0:
            sys.stderr.write(f"{hook.field}: not run, the delete action's time is up\n")
            continue
        try:
            done = subprocess.run(argv(hook), input=state, capture_output=True, cwd="/",
                                  env=dict(e.split("=", 1) for e in hook.env),
                                  timeout=min(hook.timeout or left, left))
            if done.returncode != 0:
                sys.stderr.write(f"{hook.field} ({hook.path}): exited with status "
                                 f"{done.returncode}\n")
        except (OSError, subprocess.TimeoutExpired) as exc:
            sys.stderr.write(f"{hook.field} ({hook.path}): {exc}\n")


def _delete_leftovers(flags: Flags) -> int:
    """Stop and release what a dead shim left: container, mounts, network, dataset; then the
    spec's poststop hooks."""
    from pathlib import Path

    from runtime import registry
    from runtime.errdefs import ErrdefsError
    from runtime.store import Store, state_root

    bundle = Path(flags.bundle) if flags.bundle else Path.cwd()
    store = Store(state_root())
    record = store.load_record(flags.namespace, flags.id)
    state_dir = store.container_dir(flags.namespace, flags.id)
    try:
        # The backend that made the task cleans it up (runtime.registry, keyed on the name in
        # its record); without a record, every backend looks for what is its.
        pid, status = registry.cleanup_any(record.backend if record else "", state_dir, bundle)
    except (OSError, ErrdefsError) as exc:
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
    _poststop_hooks(flags.id, str(bundle))
    if not pid and record is not None:
        pid = record.pid
    if record is not None and record.exit_status is not None and status == 0:
        status = record.exit_status
    store.remove(flags.namespace, flags.id)
    sys.stdout.buffer.write(encode_delete_response(pid, status, time.time()))
    sys.stdout.flush()
    return 0
