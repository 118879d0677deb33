"""The task registry and the orchestration of each lifecycle step, in domain terms.

The RPC edge (``shim.task_service``) calls these methods with plain values; the supervisor
drives a :class:`~runtime.backend.Backend`, keeps state in memory (State answers from memory,
never blocking on a backend call), persists snapshots through :class:`~runtime.store.Store`
and hands domain events to an :class:`~runtime.events.EventSink` in contract order:
TaskCreate → TaskStart → TaskExit → TaskDelete (runtime v2 README, shim-protocol.md 4.3).

No lock is held across a backend call: a container id is *reserved* in the table before the
slow create, so a concurrent duplicate create fails fast and State of other tasks never waits.

What every backend shares lives here, not in the backends (runtime.backend, DESIGN.md 5): the
bundle is validated against the OCI spec before anything is made, and the OCI hooks run at
their lifecycle points around the backend's calls (:func:`create_container`,
:func:`start_container`, :func:`deleted`). The OCI CLI (shim.oci_cli), whose commands each
run in their own process, drives backends through the same functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from runtime import events as ev
from runtime import hooks, oci
from runtime.backend import (
    Backend,
    Checkpointable,
    ContainerHandle,
    Execer,
    FinishesCreate,
    OomWatchable,
    Pausable,
    ProcessHandle,
    Restorer,
    SelfCheckpointing,
    StatsSource,
    Terminal,
    Updatable,
)
from runtime.cgroups import Stats
from runtime.errdefs import (
    AlreadyExists,
    ErrdefsError,
    FailedPrecondition,
    NotFound,
    NotImplementedErr,
)
from runtime.process import Process, ProcessState
from runtime.provision import Provisioner
from runtime.reaper import Reaper
from runtime.state import Op
from runtime.store import Store, TaskRecord
from runtime.types import CreateConfig, ExecConfig, ExitStatus, Status

log = logging.getLogger(__name__)


@runtime_checkable
class CheckpointingProvisioner(Protocol):
    """[storage] A provisioner that can checkpoint what it made (storage.provisioner)."""

    async def checkpoint(self, config: CreateConfig, pid: int | None, directory: Path, *,
                         leave_running: bool, target: Checkpointable | None = None
                         ) -> object: ...


# -- what every backend shares: validation and hooks ---------------------------------------------


def validate(config: CreateConfig) -> None:
    """The bundle against config.md, before anything is made: InvalidArgument naming the first
    field that breaks it. (A backend may still refuse what it cannot express.)"""
    oci.check_spec(config.spec)


def hook_points(reaper: Reaper | None, config: CreateConfig) -> hooks.HookPoints | None:
    """The spec's hooks, run through ``reaper``; None when there are none, or for a task
    restored from a checkpoint (its processes are past every hook's point)."""
    if config.restore is not None or not (config.spec.get("hooks") or {}):
        return None
    if reaper is None:
        raise FailedPrecondition("hooks: this supervisor has no process reaper to run them")
    return hooks.HookPoints(reaper, config.spec, config.id, str(config.bundle))


async def create_container(backend: Backend, config: CreateConfig,
                           points: hooks.HookPoints | None) -> ContainerHandle:
    """The backend's create (or restore), then prestart, createRuntime and createContainer
    with the init held (runtime.md "Lifecycle" steps 4-5). A hook's failure stops and deletes
    the container, so nothing is left behind, and is the create's error."""
    if config.restore is not None:
        if not isinstance(backend, Restorer):
            raise NotImplementedErr(f"the {backend.name} backend cannot restore processes "
                                    "from a checkpoint")
        return await backend.restore(config, config.restore)
    handle = await backend.create(config)
    if points:
        try:
            await points.created(handle.pid)
            if isinstance(handle, FinishesCreate):
                # The init's set-up after the hooks (a hook may put the program in place),
                # as runc's: its error is the create's.
                await handle.finish_create()
        except BaseException:
            await handle.delete()
            raise
    return handle


async def start_container(handle: ContainerHandle, points: hooks.HookPoints | None) -> None:
    """startContainer (in the container, before its program runs; a failure stops it:
    runtime.md "Lifecycle" step 7), the backend's start, then poststart (warnings only)."""
    if points:
        try:
            await points.start_container(handle.pid)
        except ErrdefsError:
            with contextlib.suppress(NotFound):
                handle.kill(signal.SIGKILL)
            raise
    await handle.start()
    if points:
        await points.poststart(handle.pid)


async def deleted(points: hooks.HookPoints | None) -> None:
    """poststop, once the backend removed the container (failures are warnings)."""
    if points:
        await points.poststop()


#: How long an exited init waits for its execs' exits before publishing its own anyway.
EXEC_EXIT_GRACE = 10.0


@dataclass
class Exec:
    """An exec process: added by Exec, started by Start, removed by Delete."""

    config: ExecConfig
    process: Process
    handle: ProcessHandle | None = None


@dataclass
class Container:
    config: CreateConfig
    init: Process
    handle: ContainerHandle | None = None
    deleting: bool = False
    monitor: asyncio.Task[None] | None = field(default=None, repr=False)
    execs: dict[str, Exec] = field(default_factory=dict)
    #: The spec's OCI hooks (None: none, or a restored task).
    points: hooks.HookPoints | None = None
    #: Set as soon as the init is reaped: no exec may start after that (runc refuses too).
    init_reaped: bool = False
    #: Execs started and not yet reported exited; the init's exit waits for zero, so exec
    #: exits are always published before the init's (containerd issue 9719, runc shim).
    running_execs: int = 0
    execs_done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def id(self) -> str:
        return self.config.id


class Supervisor:
    def __init__(self, backend: Backend, sink: ev.EventSink, store: Store, namespace: str,
                 on_empty: Callable[[], None] | None = None,
                 provisioners: tuple[Provisioner, ...] = (),
                 reaper: Reaper | None = None) -> None:
        """``reaper`` runs the spec's OCI hooks (a task with hooks needs one)."""
        self.backend = backend
        self.reaper = reaper
        self.provisioners = provisioners
        self.sink = sink
        self.store = store
        self.namespace = namespace
        self.on_empty = on_empty
        self._containers: dict[str, Container] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lookup ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._containers)

    def ids(self) -> list[str]:
        return list(self._containers)

    def _get(self, id: str) -> Container:
        c = self._containers.get(id)
        if c is None or c.handle is None:
            raise NotFound(f"container {id} not created")
        return c

    def _process(self, id: str, exec_id: str) -> tuple[Container, Process]:
        c = self._get(id)
        if exec_id:
            return c, self._exec(c, exec_id).process
        return c, c.init

    @staticmethod
    def _exec(c: Container, exec_id: str) -> Exec:
        e = c.execs.get(exec_id)
        if e is None:
            raise NotFound(f"exec {exec_id} of container {c.id} does not exist")
        return e

    # -- lifecycle --------------------------------------------------------------------------

    async def create(self, config: CreateConfig) -> int:
        if config.id in self._containers:
            raise AlreadyExists(f"container {config.id}")
        validate(config)  # config.md, before any provisioner or the backend makes anything
        c = Container(config, Process(config.id, "", config.stdio))
        self._containers[config.id] = c  # the reservation
        try:
            config = c.config = await self._prepare(config)
            try:
                c.points = hook_points(self.reaper, config)
                handle = await create_container(self.backend, config, c.points)
            except BaseException:
                await self._release(config)
                raise
        except BaseException:
            del self._containers[config.id]
            self.store.remove(self.namespace, config.id)
            raise
        c.handle = handle
        c.init.pid = handle.pid
        self.sink.publish(ev.TaskCreated(config.id, str(config.bundle), config.rootfs,
                                         config.stdio, "", handle.pid))
        c.monitor = self._spawn(self._monitor(c))
        if isinstance(handle, OomWatchable):
            handle.watch_oom(lambda: self.sink.publish(ev.TaskOOM(config.id)))
        self._persist(c)
        log.info("created container %s pid %d", config.id, handle.pid)
        return handle.pid

    async def start(self, id: str, exec_id: str = "") -> int:
        if exec_id:
            return await self._start_exec(id, exec_id)
        c, p = self._process(id, exec_id)
        p.check(Op.START)
        if not p.start_settled.is_set():
            raise FailedPrecondition(f"{p.name} is already starting")
        assert c.handle is not None
        p.start_settled.clear()
        try:
            await start_container(c.handle, c.points)
            p.started = True
            if p.status is Status.CREATED:
                p.commit(Op.START)
            self.sink.publish(ev.TaskStarted(id, p.pid))
        finally:
            p.start_settled.set()
        self._persist(c)
        return p.pid

    async def _monitor(self, c: Container) -> None:
        """Waits for the init's exit and publishes it after its start event."""
        assert c.handle is not None
        code = await c.handle.wait()
        exited_at = time.time()
        c.init_reaped = True
        await c.init.start_settled.wait()
        if c.running_execs:
            # The kernel killed the execs with the PID namespace's init; let their exits be
            # reported first, but never wait forever for a stuck lxc-attach.
            try:
                async with asyncio.timeout(EXEC_EXIT_GRACE):
                    await c.execs_done.wait()
            except TimeoutError:
                log.warning("container %s: %d exec(s) still running after the init exited",
                            c.id, c.running_execs)
        status = c.init.set_exited(code, exited_at)
        # A never-started init has no start event; like the runc shim, publish no exit either.
        if c.init.started:
            self.sink.publish(ev.ProcessExited(c.id, c.id, status.pid, status.status,
                                               status.exited_at))
        self._persist(c)
        log.info("container %s exited with status %d", c.id, code)

    def kill(self, id: str, exec_id: str, sig: int, all: bool = False) -> None:
        c, p = self._process(id, exec_id)
        if exec_id:
            e = self._exec(c, exec_id)
            if e.handle is None and p.exit is None:
                raise FailedPrecondition(f"exec {exec_id}: process not created")
            p.require_alive()
            assert e.handle is not None
            e.handle.kill(sig)
            return
        p.require_alive()
        assert c.handle is not None
        c.handle.kill(sig, all)

    async def wait(self, id: str, exec_id: str = "") -> ExitStatus:
        _, p = self._process(id, exec_id)
        return await p.wait()

    async def delete(self, id: str, exec_id: str = "") -> ExitStatus:
        if exec_id:
            return self._delete_exec(id, exec_id)
        c, p = self._process(id, exec_id)
        p.check(Op.DELETE)
        if c.deleting:
            raise FailedPrecondition(f"container {id} is already being deleted")
        assert c.handle is not None
        c.deleting = True
        try:
            if p.exit is None:  # CREATED, never started: stop the held init first
                try:
                    c.handle.kill(signal.SIGKILL, True)
                except NotFound:
                    pass
                await p.wait()
            await c.handle.delete()
            await deleted(c.points)
            await self._release(c.config)
        except BaseException:
            c.deleting = False
            raise
        if c.monitor is not None:
            await asyncio.shield(c.monitor)
        assert p.exit is not None
        p.status = Status.DELETED
        del self._containers[id]
        self.store.remove(self.namespace, id)
        self.sink.publish(ev.TaskDeleted(id, p.pid, p.exit.status, p.exit.exited_at))
        log.info("deleted container %s", id)
        return p.exit

    async def checkpoint(self, id: str, directory: Path, *, exit: bool = False) -> None:
        """[storage] The Task API's Checkpoint: the storage provisioner snapshots the
        container's dataset (and dumps its processes where CRIU works) and records that in
        ``directory``; with ``exit`` the task is then killed, like runc's ``--exit``."""
        c = self._get(id)
        if c.deleting or c.init.status is Status.DELETED:
            raise FailedPrecondition(f"container {id} is being deleted")
        running = c.init.exit is None
        checkpointer = next((p for p in self.provisioners
                             if isinstance(p, CheckpointingProvisioner)), None)
        if isinstance(c.handle, SelfCheckpointing):
            await self._checkpoint_by_backend(c, c.handle, directory, exit=exit)
            return
        if checkpointer is None:
            raise NotImplementedErr("checkpoint needs ZFS storage ([storage] zfs_pool in "
                                    "config.toml)")
        # Frozen from before the dump until after the snapshot, so that the files match the
        # process image: CRIU's own freezing let the processes run on during a slow dump on
        # a cgroup v2 host (measured in the kernel test host under load). ctr pauses the task
        # itself (then it stays paused); otherwise the freeze is internal, without events.
        quiesce = (running and c.init.status is Status.RUNNING
                   and isinstance(c.handle, Pausable))
        if quiesce:
            assert isinstance(c.handle, Pausable)
            await c.handle.pause()
        try:
            await checkpointer.checkpoint(c.config, c.init.pid if running else None, directory,
                                          leave_running=not exit,
                                          target=(c.handle if isinstance(c.handle,
                                                                         Checkpointable)
                                                  else None))
            if exit and c.init.exit is None:
                assert c.handle is not None
                try:
                    c.handle.kill(signal.SIGKILL, True)
                except NotFound:
                    pass
        finally:
            if quiesce and c.init.exit is None:
                assert isinstance(c.handle, Pausable)
                with contextlib.suppress(ErrdefsError, OSError):
                    await c.handle.resume()  # a SIGKILLed frozen task dies once thawed (v1)

    async def _checkpoint_by_backend(self, c: Container, handle: SelfCheckpointing,
                                     directory: Path, *, exit: bool) -> None:
        """A backend that snapshots its containers itself (runtime.backend.SelfCheckpointing),
        frozen around the snapshot like the storage's; no process images."""
        quiesce = (c.init.exit is None and c.init.status is Status.RUNNING
                   and isinstance(handle, Pausable))
        if quiesce:
            assert isinstance(handle, Pausable)
            await handle.pause()
        try:
            await handle.checkpoint_filesystem(directory)
            if exit and c.init.exit is None:
                with contextlib.suppress(NotFound):
                    assert c.handle is not None
                    c.handle.kill(signal.SIGKILL, True)
        finally:
            if quiesce and c.init.exit is None:
                assert isinstance(handle, Pausable)
                with contextlib.suppress(ErrdefsError, OSError):
                    await handle.resume()

    def state(self, id: str, exec_id: str = "") -> ProcessState:
        c, p = self._process(id, exec_id)
        return p.snapshot(str(c.config.bundle))

    def pids(self, id: str) -> list[tuple[int, str]]:
        """(host pid, exec id or "") of every process of the container."""
        c = self._get(id)
        assert c.handle is not None
        pids = c.handle.pids() if c.init.exit is None else []
        if not pids and c.init.exit is None:
            pids = [c.init.pid]
        exec_of = {e.process.pid: e.config.exec_id for e in c.execs.values()
                   if e.handle is not None and e.process.exit is None}
        return [(pid, exec_of.get(pid, "")) for pid in pids]

    # -- execs --------------------------------------------------------------------------------

    def add_exec(self, id: str, config: ExecConfig) -> None:
        """Exec: register a process to be started by a later Start (runc's ReserveProcess)."""
        c = self._get(id)
        if not isinstance(c.handle, Execer):
            raise NotImplementedErr(f"the {self.backend.name} backend cannot exec")
        if c.init.exit is not None or c.init_reaped or c.deleting:
            raise FailedPrecondition(f"container {id} is not running")
        if config.exec_id in c.execs:
            raise AlreadyExists(f"id {config.exec_id}")
        c.execs[config.exec_id] = Exec(config, Process(id, config.exec_id, config.stdio))
        self.sink.publish(ev.ExecAdded(id, config.exec_id))

    async def _start_exec(self, id: str, exec_id: str) -> int:
        c = self._get(id)
        e = self._exec(c, exec_id)
        p = e.process
        p.check(Op.START)
        if c.init_reaped or c.init.exit is not None:
            raise FailedPrecondition(f"container {id} init process is not running")
        if not p.start_settled.is_set():
            raise FailedPrecondition(f"exec {exec_id} is already starting")
        assert isinstance(c.handle, Execer)
        p.start_settled.clear()
        c.running_execs += 1
        c.execs_done.clear()
        try:
            e.handle = await c.handle.exec(e.config)
            p.pid = e.handle.pid
            p.started = True
            p.commit(Op.START)
            self.sink.publish(ev.ExecStarted(id, exec_id, p.pid))
        except BaseException:
            self._exec_finished(c)
            raise
        finally:
            p.start_settled.set()
        self._spawn(self._monitor_exec(c, e))
        return p.pid

    async def _monitor_exec(self, c: Container, e: Exec) -> None:
        assert e.handle is not None
        try:
            code = await e.handle.wait()
            exited_at = time.time()
            await e.process.start_settled.wait()
            await e.handle.close()  # the client's FIFOs reach EOF with the exit
            st = e.process.set_exited(code, exited_at)
            self.sink.publish(ev.ProcessExited(c.id, e.config.exec_id, st.pid, st.status,
                                               st.exited_at))
        finally:
            self._exec_finished(c)

    @staticmethod
    def _exec_finished(c: Container) -> None:
        c.running_execs -= 1
        if c.running_execs <= 0:
            c.running_execs = 0
            c.execs_done.set()

    def _delete_exec(self, id: str, exec_id: str) -> ExitStatus:
        c = self._get(id)
        e = self._exec(c, exec_id)
        e.process.check(Op.DELETE)
        del c.execs[exec_id]
        e.process.status = Status.DELETED
        # runc publishes no event for an exec's deletion (README: SHOULD), nor do we.
        return e.process.exit or ExitStatus(0, 0)

    # -- terminal, pause, stats, update ----------------------------------------------------------

    def resize_pty(self, id: str, exec_id: str, width: int, height: int) -> None:
        c, p = self._process(id, exec_id)
        target = self._exec(c, exec_id).handle if exec_id else c.handle
        if target is not None and isinstance(target, Terminal | ProcessHandle):
            target.resize(width, height)  # a process without a terminal ignores it

    def close_io(self, id: str, exec_id: str) -> None:
        c, p = self._process(id, exec_id)
        target = self._exec(c, exec_id).handle if exec_id else c.handle
        if target is not None and isinstance(target, Terminal | ProcessHandle):
            target.close_stdin()

    async def pause(self, id: str) -> None:
        c = self._get(id)
        if not isinstance(c.handle, Pausable):
            raise NotImplementedErr(f"the {self.backend.name} backend cannot pause")
        c.init.check(Op.PAUSE)
        c.init.commit(Op.PAUSE)  # PAUSING while the freezer works
        try:
            await c.handle.pause()
        except BaseException:
            if c.init.status is Status.PAUSING:
                c.init.status = Status.RUNNING
            raise
        if c.init.status is Status.PAUSING:  # an exit meanwhile wins
            c.init.commit(Op.PAUSED)
            self.sink.publish(ev.TaskPaused(id))
        self._persist(c)

    async def resume(self, id: str) -> None:
        c = self._get(id)
        if not isinstance(c.handle, Pausable):
            raise NotImplementedErr(f"the {self.backend.name} backend cannot resume")
        c.init.check(Op.RESUME)
        await c.handle.resume()
        if c.init.status is Status.PAUSED:
            c.init.commit(Op.RESUME)
            self.sink.publish(ev.TaskResumed(id))
        self._persist(c)

    def stats(self, id: str) -> Stats:
        c = self._get(id)
        if not isinstance(c.handle, StatsSource):
            raise NotImplementedErr(f"the {self.backend.name} backend has no statistics")
        if c.init.exit is not None:
            raise NotFound(f"container {id} has exited: no cgroup to read")
        return c.handle.stats()

    async def update(self, id: str, resources: dict[str, Any]) -> None:
        c = self._get(id)
        if not isinstance(c.handle, Updatable):
            raise NotImplementedErr(f"the {self.backend.name} backend cannot update resources")
        if c.init.exit is not None:
            raise FailedPrecondition(f"container {id} is not running")
        await c.handle.update(resources)

    def task_pid(self, id: str) -> int:
        c = self._containers.get(id)
        return c.init.pid if c is not None else 0

    def shutdown_requested(self) -> bool:
        """Shutdown RPC: True (and ``on_empty`` called) when no task is left to serve."""
        if self._containers:
            return False
        if self.on_empty is not None:
            self.on_empty()
        return True

    async def _prepare(self, config: CreateConfig) -> CreateConfig:
        done: list[tuple[Provisioner, CreateConfig]] = []
        try:
            for p in self.provisioners:
                config = await p.prepare(config)
                done.append((p, config))
        except BaseException:
            for p, cfg in reversed(done):
                await self._release_one(p, cfg)
            raise
        return config

    async def _release(self, config: CreateConfig) -> None:
        for p in reversed(self.provisioners):
            await self._release_one(p, config)

    @staticmethod
    async def _release_one(p: Provisioner, config: CreateConfig) -> None:
        try:
            await p.release(config)
        except Exception:  # release must go on with the others; the log says what stayed
            log.exception("%s: releasing what was provisioned for %s failed", p.name, config.id)

    # -- housekeeping -------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _persist(self, c: Container) -> None:
        p = c.init
        try:
            self.store.save_record(TaskRecord(
                id=c.id, namespace=self.namespace, bundle=str(c.config.bundle),
                backend=getattr(c.handle, "backend_name", "") or self.backend.name,
                pid=p.pid, status=p.status.value,
                exit_status=p.exit.status if p.exit else None,
                exited_at=p.exit.exited_at if p.exit else None, shim_pid=os.getpid(),
                oci_version=str(c.config.spec.get("ociVersion", "")),
                annotations=oci.spec_annotations(c.config.spec)))
        except OSError as exc:  # a snapshot is an aid for recovery, never a reason to fail
            log.warning("cannot persist state of %s: %s", c.id, exc)
