"""Clean-up of an LXC container whose shim is gone: the ``delete`` action's backend half.

Runs in the short-lived ``containerd-shim-proxmox-v2 delete`` process after *every* task
(environment.md section 1), so it is synchronous, standard library only, idempotent, and
finishes well under containerd's 5 s. It works from the JSON the backend persisted
(``runtime/lxc/state.py``); no JSON means nothing (left) to clean.

The daemon's ``delete()`` reuses :func:`remove_files` and :func:`abort_gate` for the same steps.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import time
from pathlib import Path

from runtime.lxc import cgroup, mount, state

#: How long to wait for killed processes to disappear before unmounting regardless.
KILL_WAIT = 2.0
#: The in-container init's directory (runtime.lxc.owninit), relative to the state dir.
OWN_INIT_DIR = "init"
#: The gate's FIFOs, in the init's directory (the init reports and waits on them: gate.py),
#: and LXC's log, relative to the state dir.
GATE_READY = f"{OWN_INIT_DIR}/gate-ready"
GATE_START = f"{OWN_INIT_DIR}/gate-start"
LXC_LOG = "lxc.log"
SIGKILL_STATUS = 128 + signal.SIGKILL


def cleanup(state_dir: Path, bundle: Path) -> tuple[int, int]:
    """Kill what is left of the container, unmount what the backend mounted, remove its files.

    Returns ``(init pid, exit status)``: 137 when it had to kill, else the recorded status, or
    137 when none was recorded (what runc's shim reports for a task it could not wait for).
    """
    del bundle  # the persisted state names the mounts; the bundle itself is containerd's
    st = state.load(state_dir)
    if st is None:
        return 0, SIGKILL_STATUS
    killed = kill_container(st, state_dir)
    remove_files(st, state_dir)
    if killed or st.exit_status is None:
        return st.pid, SIGKILL_STATUS
    return st.pid, st.exit_status


def kill_container(st: state.PersistedState, state_dir: Path) -> bool:
    """SIGKILL the init (and, through its PID namespace, everything in it) if it is still the
    recorded process, release a held gate, and wait briefly for the init and the monitor
    (the LXC monitor) to go. True if anything was still running."""
    targets = [(st.pid, st.pid_start_time), (st.monitor_pid, st.monitor_start_time)]
    alive = [t for t in targets if state.is_alive(*t)]
    if not alive:
        return False
    if state.is_alive(st.pid, st.pid_start_time):
        for pid in cgroup.procs(cgroup.cgroup_dir(st.pid, st.name, st.cgroup)):
            _kill(pid)
        _kill(st.pid)
    # A created container's init waits at the gate: abort it (a held gate never sees EOF).
    abort_gate(state_dir)
    deadline = time.monotonic() + KILL_WAIT
    while alive and time.monotonic() < deadline:
        time.sleep(0.01)
        alive = [t for t in alive if state.is_alive(*t)]
    for pid, _start in alive:  # a stuck monitor must not keep the rootfs busy
        _kill(pid)
    return True


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def abort_gate(state_dir: Path) -> None:
    """Make an init that waits for "go" end instead (runtime.lxc.gate). An O_RDWR open of its
    start FIFO never blocks; the init then reads "abort", not "go", and exits."""
    try:
        fd = os.open(state_dir / GATE_START, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, b"abort\n")
    except OSError:
        pass
    finally:
        os.close(fd)


#: lxc-checkpoint's output and CRIU's extra options of a restore (runtime.lxc.restore), in
#: the state directory.
RESTORE_LOG = "restore.out"
CRIU_CONF = "criu-restore.conf"
RESTORE_SCRIPT = "criu-restore-action.sh"


def remove_files(st: state.PersistedState, state_dir: Path) -> None:
    """Unmount what the backend mounted, remove the LXC container dir and the backend's files,
    the persisted JSON last (so an interrupted clean-up can be retried)."""
    for target in reversed(st.mounts):
        try:
            mount.unmount(target)
        except OSError:
            mount.sys_umount(target, mount.MNT_DETACH)
    shutil.rmtree(Path(st.lxcpath) / st.name, ignore_errors=True)
    cgroup.remove_lxc_cgroups(st.name, st.cgroup)
    for name in (GATE_READY, GATE_START, LXC_LOG, RESTORE_LOG, CRIU_CONF, RESTORE_SCRIPT):
        try:
            (state_dir / name).unlink()
        except FileNotFoundError:
            pass
    shutil.rmtree(state_dir / OWN_INIT_DIR, ignore_errors=True)
    state.remove(state_dir)
