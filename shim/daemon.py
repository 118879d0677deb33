"""The shim daemon: the composition root.

The only module that names concrete implementations (the remote publisher, the ttrpc
server; the backend comes from :mod:`runtime.registry` by name). It serves
``containerd.task.v2.Task`` on the socket ``start`` bound, until ``Shutdown`` arrives with no
task left, or SIGTERM/SIGINT (which leave containers running, as the runc shim does), or the
idle watch (shim/idle.py) finds it has had nothing to serve for a while. Whichever it is, the
socket file goes first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from shim.flags import Flags

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 3.0


def remove_socket(path: str) -> None:
    """Unlink the daemon's socket file: on the way out, or when it can never serve (containerd
    runs no ``delete`` after a ``start`` it gave up, so nobody else would)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def run(*, flags: Flags, bundle: Path, sock: socket.socket, socket_path: str,
        loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Serve until the daemon ends, on ``loop`` if given (a spare made it before its request
    came, shim/zygote.py), else on a new one."""
    from shim import log as shimlog
    from shim import proctitle

    try:
        shimlog.setup(flags.debug, shimlog.open_log_fifo(bundle / "log"))
        os.chdir(bundle)  # gone when containerd gave the task up while `start` ran
    except BaseException:
        remove_socket(socket_path)
        raise
    proctitle.set_title(proctitle.daemon_title(flags.namespace, flags.id, flags.address))
    write_pid_file(bundle)
    ttrpc_address = os.environ.get("TTRPC_ADDRESS") or f"{flags.address}.ttrpc"
    try:
        # asyncio.run() with the loop chosen (asyncio.Runner is what run() uses).
        with asyncio.Runner(loop_factory=None if loop is None else lambda: loop) as runner:
            runner.run(serve(flags, sock, socket_path, ttrpc_address))
    except Exception:
        log.exception("shim daemon failed")
        raise


PID_FILE = "shim.pid"


def write_pid_file(bundle: Path) -> None:
    """``<bundle>/shim.pid``: the daemon's PID, as the runc shim's ``start`` writes it
    (shim.WritePidFile: a temporary file renamed into place, so a reader never sees half of
    it). containerd does not read it (shim-protocol.md 2.2); operators and tools do. It goes
    with the bundle, which containerd removes."""
    tmp = bundle / f".{PID_FILE}"
    try:
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.replace(tmp, bundle / PID_FILE)
    except OSError as exc:
        log.warning("cannot write %s: %s", bundle / PID_FILE, exc)


def protect_from_oom() -> int | None:
    """Give the daemon a lower OOM score than its containers, so that under memory pressure
    the kernel kills a container before the shim that reports its exit (the runc shim also
    adjusts its own score). Returns the original score, which the containers keep."""
    try:
        with open("/proc/self/oom_score_adj") as f:
            original = int(f.read())
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(max(-999, original - 1)))
    except (OSError, ValueError) as exc:
        log.warning("cannot lower the shim's OOM score: %s", exc)
        return None
    return original


async def serve(flags: Flags, sock: socket.socket, socket_path: str, ttrpc_address: str) -> None:
    removed = False

    def remove_once() -> None:
        # Exactly once: after it, a `start` for this group may bind a new shim at that path.
        nonlocal removed
        if not removed:
            removed = True
            remove_socket(socket_path)

    try:
        await _serve(flags, sock, socket_path, ttrpc_address, remove_once)
    finally:
        remove_once()  # also when setting up failed: nobody else removes the file


async def _serve(flags: Flags, sock: socket.socket, socket_path: str, ttrpc_address: str,
                 remove_once: Callable[[], None]) -> None:
    from network.provisioner import NetworkProvisioner  # [network] shim-managed networks
    from runtime import oplog, registry
    from runtime.oplog import OpLog
    from runtime.reaper import Reaper
    from runtime.store import Store, state_root
    from runtime.supervisor import Supervisor
    from shim.events import RemotePublisher
    from shim.idle import IdleWatch, SupervisorTasks, grace_from_env
    from shim.status_map import to_status
    from shim.task_service import SERVICE, TaskService
    from shim.ttrpc import Server
    from storage.provisioner import StorageProvisioner  # [storage] ZFS datasets

    loop = asyncio.get_running_loop()
    reaper = Reaper(child_oom_score_adj=protect_from_oom())
    reaper.install(loop)
    root = state_root()
    store = Store(root)
    publisher = RemotePublisher(ttrpc_address, flags.namespace)
    publisher.start()
    stop = asyncio.Event()
    # The backend by name (runtime.registry), the name every task's record keeps for the
    # `delete` action: each task's configuration ([backend] type) chooses; LXC by default.
    backend = registry.SelectingBackend(registry.BackendContext(reaper, root))
    supervisor = Supervisor(backend, publisher, store, flags.namespace, reaper=reaper,
                            on_empty=stop.set,
                            # [network] after storage's provisioner (it needs the final spec).
                            provisioners=(
                                # [storage] first: the rootfs is a ZFS dataset where a pool is
                                # configured; its commands run through the daemon's reaper.
                                StorageProvisioner(reaper, oplog.path_under(root)),
                                NetworkProvisioner(root / "network")))
    # Like the runc shim (ttrpc.UnixSocketRequireSameUser, shim-protocol.md §1.1): only peers
    # of our own uid and gid, on top of the socket file's 0600.
    server = Server(error_mapper=to_status, check_peer_credentials=True)
    methods = TaskService(supervisor, store,
                          OpLog(oplog.path_under(root), source="task")).methods()
    server.register_service(SERVICE, methods)
    # containerd 2.x speaks task v3 to shims that ask for it; its messages and numbers are
    # those of v2 (shim-protocol.md section 8), so the same handlers serve both names.
    server.register_service("containerd.task.v3.Task", methods)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("shim %d serving %s for namespace %s", os.getpid(), socket_path, flags.namespace)
    serving = loop.create_task(server.serve(sock))
    watch = IdleWatch(SupervisorTasks(supervisor), server, Path.cwd(), stop.set,
                      grace_from_env())
    watching = loop.create_task(watch.run(), name="idle-watch")
    try:
        await stop.wait()
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        # Unlink first, so a `start` for this group binds a new shim instead of dialling us.
        remove_once()
        await server.shutdown(SHUTDOWN_GRACE)
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await publisher.aclose()
        await supervisor.aclose()
        await backend.aclose()  # e.g. the Proxmox backend's HTTP sessions
        reaper.uninstall()
        log.info("shim %d exiting", os.getpid())
