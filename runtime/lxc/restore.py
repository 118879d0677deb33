"""A container whose processes are restored from CRIU images by ``lxc-checkpoint -r``.

LXC's restore (``do_restore`` in src/lxc/criu.c) forks a monitor that runs ``criu restore
--restore-detached --restore-sibling`` with the container's configuration (rootfs, mount
entries, cgroups, network), then stays as the container's monitor while ``lxc-checkpoint``
itself exits. The restored program (PID 1: the init exec'd it before the dump) is therefore
the monitor's child, not ours: its end is seen through a pidfd. The monitor, orphaned, comes
back to the daemon, a child subreaper (:mod:`runtime.reaper`), which reaps it. LXC's restore
monitor never reaps the program: its signal handler looks with ``waitid(WNOWAIT)`` and
``do_restore`` then only ends (src/lxc/criu.c, start.c, LXC 5.0), unlike ``__lxc_start``,
which waits for the status. So the exit status is read from the zombie while the monitor
lives, or, once the monitor has exited and the zombie came back to the daemon, from the
daemon's reaper (see :meth:`RestoredContainer._wait_init`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from runtime import cgroups, criu_log, errdefs
from runtime.lxc import cgroup, cleanup, criu_stdio, state
from runtime.lxc.backend import LxcContainer, lxc_log_errors, zombie_status
from runtime.reaper import Reaper
from runtime.stdio import ProcessIO, fd_ready

#: CRIU runs this at each stage of the restore (criu(8), "--action-script"); at "pre-resume"
#: the processes are restored and held by CRIU, and freezing their cgroup then keeps them
#: from running before Start (measured: frozen only after lxc-checkpoint returned, a counter
#: under load went on by two steps first). At "post-restore" CRIU still needs the processes
#: to run its restorer's last steps: freezing there hung the restore (measured).
_FREEZE_SCRIPT = """#!/bin/sh
[ "$CRTOOLS_SCRIPT_ACTION" = pre-resume ] || exit 0
pid=$CRTOOLS_INIT_PID
v2=$(sed -n 's/^0:://p' "/proc/$pid/cgroup")
if [ -n "$v2" ] && [ -e "/sys/fs/cgroup$v2/cgroup.freeze" ]; then
    echo 1 > "/sys/fs/cgroup$v2/cgroup.freeze"
fi
v1=$(sed -n 's/^[0-9]*:freezer://p' "/proc/$pid/cgroup")
if [ -n "$v1" ] && [ -e "/sys/fs/cgroup/freezer$v1/freezer.state" ]; then
    echo FROZEN > "/sys/fs/cgroup/freezer$v1/freezer.state"
fi
exit 0
"""

#: CRIU restores a whole process tree: under QEMU without KVM this took seconds (measured);
#: a CRIU that failed badly (a BUG in its restorer) left lxc-checkpoint waiting for ever.
RESTORE_TIMEOUT = 120.0
MONITOR_EXIT_TIMEOUT = 10.0


async def restore(reaper: Reaper, lxc_checkpoint: str, st: state.PersistedState,
                  state_dir: Path, images: Path, init_dir: Path, io: ProcessIO,
                  env: Mapping[str, str], keys: dict[int, str]) -> RestoredContainer:
    """Restore container ``st.name`` (its LXC config already written) from ``images``; the
    streams the dump recorded are replaced by ``io``'s (``keys``: their CRIU keys, for a
    later checkpoint of the restored container)."""
    if not (images / "inventory.img").is_file():
        raise errdefs.NotFound(f"CRIU images {images}: no inventory.img (not a CRIU dump)")
    out_path = state_dir / cleanup.RESTORE_LOG
    log_file = state_dir / cleanup.LXC_LOG
    # LXC 5 passes CRIU no --cgroup-root on a pure cgroup v2 host, and CRIU would recreate the
    # dumped container's cgroup (lxc.payload.<old name>, measured in the kernel test host);
    # CRIU reads extra options from the file CRIU_CONFIG_FILE names (criu(8), "Configuration
    # files"). LXC, running as root, makes the payload cgroup at the root of the hierarchy.
    conf = state_dir / cleanup.CRIU_CONF
    dumped = criu_stdio.read_keys(images)
    fds, spare = _stream_fds(io, dumped, keys)
    for n, mode in criu_stdio.read_modes(images).items():
        if n in fds and fds[n] not in spare:
            with contextlib.suppress(OSError):
                os.fchmod(fds[n], mode)  # what LXC made of the dumped stream's mode
    script = state_dir / cleanup.RESTORE_SCRIPT
    script.write_text(_FREEZE_SCRIPT)
    script.chmod(0o700)
    # mntns-compat-mode: CRIU 3.17's default mount engine (mount-v2) failed on the bind of
    # /dev/null that masks a file (`Failed to move_mount from /dev/null to …: Invalid
    # argument`, measured with ctr's default spec, whose maskedPaths are such binds).
    lines = [f"cgroup-root /{cgroup.payload(st.name, st.cgroup)}", f"action-script {script}",
             "mntns-compat-mode", *criu_stdio.inherit_lines(dumped, fds)]
    conf.write_text("".join(f"{line}\n" for line in lines))
    env = {**env, "CRIU_CONFIG_FILE": str(conf)}
    argv = [lxc_checkpoint, "-r", "-D", str(images), "-P", st.lxcpath, "-n", st.name,
            "-o", str(log_file), "-l", "INFO"]
    # The monitor LXC leaves behind keeps this stdout and stderr: a file, never a pipe that
    # someone reads to EOF.
    try:
        with open(out_path, "ab") as out:
            child = reaper.spawn(argv, stdout=out.fileno(), stderr=out.fileno(), env=env,
                                 cwd="/", new_session=True, pass_fds=sorted(set(fds.values())))
    finally:
        for fd in spare:
            os.close(fd)
    try:
        async with asyncio.timeout(RESTORE_TIMEOUT):
            rc = await child.wait()
    except TimeoutError:
        # Its own session (new_session): the group holds LXC's monitor and CRIU too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, 9)
        await child.wait()
        why = criu_errors(images / "restore.log") or "no error in CRIU's log"
        raise errdefs.DeadlineExceeded(
            f"CRIU restore of {st.name}: no result within {RESTORE_TIMEOUT:.0f} s ({why})"
        ) from None
    if rc != 0:
        why = (criu_errors(images / "restore.log") or lxc_log_errors(log_file)
               or f"lxc-checkpoint exited with {rc}")
        raise errdefs.FailedPrecondition(f"CRIU restore of {st.name} failed: {why}")
    io.spawned()  # the restored processes hold the streams now
    pid = await _init_pid(reaper, env, st)
    st.pid, st.pid_start_time = pid, state.start_time(pid)
    st.monitor_pid = _parent(pid)
    st.monitor_start_time = state.start_time(st.monitor_pid) if st.monitor_pid else 0
    state.save(state_dir, st)
    handle = RestoredContainer(st, state_dir, io, init_dir, reaper)
    handle.criu_stdio = keys
    # The OCI "created" state: nothing runs before Start. CRIU's pre-resume action froze
    # the cgroup before the processes were resumed; pause() confirms it (and freezes, should
    # the script have found no freezer). Start thaws.
    try:
        await handle.pause()
    except errdefs.NotFound as exc:
        where = ""
        with contextlib.suppress(OSError):
            where = Path(f"/proc/{pid}/cgroup").read_text().strip().replace("\n", "; ")
        await handle.delete()
        raise errdefs.Internal(f"restored container {st.name}: {exc} (its init's cgroups: "
                               f"{where or 'gone'})") from exc
    except BaseException:
        await handle.delete()
        raise
    return handle


def _stream_fds(io: ProcessIO, dumped: dict[int, str],
                new: dict[int, str]) -> tuple[dict[int, int], list[int]]:
    """The new task's descriptor for each stream the dump recorded (``new``: the new task's
    streams that have a path). A dumped pipe without a counterpart gets /dev/null; a dumped
    file without one is an error, since CRIU checks the file it is given. The second list
    holds the descriptors opened here, to close after the spawn."""
    own = (io.stdin, io.stdout, io.stderr)
    fds: dict[int, int] = {}
    spare: list[int] = []
    for n, key in dumped.items():
        fd = own[n] if n in new and 0 <= n < len(own) else None
        if fd is None and key.startswith("file["):
            for extra in spare:
                os.close(extra)
            name = ("stdin", "stdout", "stderr")[n] if 0 <= n < 3 else f"fd {n}"
            raise errdefs.FailedPrecondition(
                f"the checkpoint's {name} was a file or FIFO outside the container; the "
                f"restored task needs a {name} too (CRIU restores onto a descriptor given "
                "for it)")
        if fd is None:
            fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            spare.append(fd)
        fds[n] = fd
    return fds, spare


def criu_errors(log: Path, limit: int = 3) -> str:
    """CRIU's own error lines ("Error (criu/…): …") from its log, the first ones first."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "; ".join(criu_log.errors("\n".join(lines))[:limit])


async def _init_pid(reaper: Reaper, env: Mapping[str, str], st: state.PersistedState) -> int:
    r = await reaper.run(["lxc-info", "-P", st.lxcpath, "-n", st.name, "-p", "-H"], env=env)
    text = r.stdout.decode().strip()
    if r.returncode != 0 or not text.isdigit():
        raise errdefs.Internal(f"restored container {st.name}: lxc-info gave no init PID "
                               f"({r.stderr.decode().strip() or text!r})")
    return int(text)


def _parent(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    return 0


class RestoredContainer(LxcContainer):
    """A running container made by a CRIU restore; Start only marks it started."""

    def __init__(self, st: state.PersistedState, state_dir: Path, io: ProcessIO,
                 init_dir: Path, reaper: Reaper | None = None) -> None:
        self._reaper = reaper
        self._monitor_pidfd: int | None = None
        if st.monitor_pid:
            with contextlib.suppress(OSError):
                self._monitor_pidfd = os.pidfd_open(st.monitor_pid)
        super().__init__(st, state_dir, None, None, io, init_dir)

    async def start(self) -> None:
        await super().start()
        await self.resume()

    def kill(self, signal: int, all: bool = False) -> None:
        if not self._started and not self._exit.done():
            # A frozen process would act on the signal only when thawed.
            with contextlib.suppress(errdefs.ErrdefsError, OSError):
                cgroups.freeze(self._live_cgroups(), False)
        super().kill(signal, all)

    async def _wait_init(self) -> int:
        fd = os.pidfd_open(self._st.pid)
        try:
            await fd_ready(fd)  # a pidfd is readable once its process has exited
        finally:
            os.close(fd)
        # The restored program is PID 1 and LXC's restore monitor, its parent, passes no
        # status on, but never reaps it either (module docstring): the zombie holds the
        # status until the monitor exits; then the zombie comes back to the daemon, whose
        # reaper reaps it and keeps the status. Last resort (a reaper that is not the
        # subreaper, or a status reaped too long ago): 137 when the runtime killed it (Kill,
        # or a checkpoint with exit), otherwise unknown (255).
        status = zombie_status(self._st.pid)
        if status is None and self._reaper is not None:
            status = self._reaper.orphan_status(self._st.pid)
        if status is not None:
            return status
        return 128 + 9 if self._sigkilled else 255

    async def _after_exit(self) -> None:
        # LXC's monitor removes the container's cgroups after the init is gone; the files go
        # only after it has finished.
        fd, self._monitor_pidfd = self._monitor_pidfd, None
        if fd is None:
            return
        try:
            async with asyncio.timeout(MONITOR_EXIT_TIMEOUT):
                await fd_ready(fd)
        except TimeoutError:
            with contextlib.suppress(OSError):
                os.kill(self._st.monitor_pid, 9)
        finally:
            os.close(fd)
