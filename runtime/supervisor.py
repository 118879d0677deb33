"""The task registry and the orchestration of each lifecycle step, in domain terms.

The RPC edge (``shim.task_service``) calls these methods with plain values; the supervisor
drives a :class:`~runtime.backend.Backend`, keeps state in memory (State answers from memory,
never blocking on a backend call), persists snapshots through :class:`~runtime.store.Store`
and hands domain events to an :class:`~runtime.events.EventSink` in contract order:
TaskCreate → TaskStart → TaskExit → TaskDelete (runtime v2 README, shim-protocol.md 4.3).

No lock is held across a backend call: a container id is *reserved* in the table before the
slow create, so a concurrent duplicate create fails fast and State of other tasks never waits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from runtime import events as ev
from runtime.backend import Backend, ContainerHandle
from runtime.errdefs import AlreadyExists, FailedPrecondition, NotFound
from runtime.process import Process, ProcessState
from runtime.provision import Provisioner
from runtime.state import Op
from runtime.store import Store
from runtime.types import CreateConfig, ExitStatus, Status

log = logging.getLogger(__name__)


@dataclass
class Container:
    config: CreateConfig
    init: Process
    handle: ContainerHandle | None = None
    deleting: bool = False
    monitor: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.config.id


class Supervisor:
    def __init__(self, backend: Backend, sink: ev.EventSink, store: Store, namespace: str,
                 on_empty: Callable[[], None] | None = None,
                 provisioners: tuple[Provisioner, ...] = ()) -> None:
        self.backend = backend
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
            raise NotFound(f"exec {exec_id} of container {id} does not exist")
        return c, c.init

    # -- lifecycle --------------------------------------------------------------------------

    async def create(self, config: CreateConfig) -> int:
        if config.id in self._containers:
            raise AlreadyExists(f"container {config.id}")
        c = Container(config, Process(config.id, "", config.stdio))
        self._containers[config.id] = c  # the reservation
        try:
            config = c.config = await self._prepare(config)
            try:
                handle = await self.backend.create(config)
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
        self._persist(c)
        log.info("created container %s pid %d", config.id, handle.pid)
        return handle.pid

    async def start(self, id: str, exec_id: str = "") -> int:
        c, p = self._process(id, exec_id)
        p.check(Op.START)
        if not p.start_settled.is_set():
            raise FailedPrecondition(f"{p.name} is already starting")
        assert c.handle is not None
        p.start_settled.clear()
        try:
            await c.handle.start()
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
        await c.init.start_settled.wait()
        status = c.init.set_exited(code, exited_at)
        # A never-started init has no start event; like the runc shim, publish no exit either.
        if c.init.started:
            self.sink.publish(ev.ProcessExited(c.id, c.id, status.pid, status.status,
                                               status.exited_at))
        self._persist(c)
        log.info("container %s exited with status %d", c.id, code)

    def kill(self, id: str, exec_id: str, sig: int, all: bool = False) -> None:
        c, p = self._process(id, exec_id)
        p.require_alive()
        assert c.handle is not None
        c.handle.kill(sig, all)

    async def wait(self, id: str, exec_id: str = "") -> ExitStatus:
        _, p = self._process(id, exec_id)
        return await p.wait()

    async def delete(self, id: str, exec_id: str = "") -> ExitStatus:
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
        return [(pid, "") for pid in pids]

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
            self.store.save(self.namespace, c.id, {
                "id": c.id,
                "namespace": self.namespace,
                "bundle": str(c.config.bundle),
                "backend": self.backend.name,
                "pid": p.pid,
                "status": p.status.value,
                "exit_status": p.exit.status if p.exit else None,
                "exited_at": p.exit.exited_at if p.exit else None,
                "shim_pid": os.getpid(),
            })
        except OSError as exc:  # a snapshot is an aid for recovery, never a reason to fail
            log.warning("cannot persist state of %s: %s", c.id, exc)
