"""The narrow seam between the lifecycle core and a container technology.

A backend knows nothing about protobuf or ttrpc; the core knows nothing about LXC or Proxmox.
What is the same for every backend stays out of it: the bundle's validation against the OCI
spec, the OCI hooks and the task state are the supervisor's (:mod:`runtime.supervisor`), the
task record is :class:`runtime.store.TaskRecord`, and which backend serves a task is
:mod:`runtime.registry`'s, keyed on the name the record keeps.

Optional capabilities (exec, pause, stats, update, checkpoint, restore, attach) are separate
small Protocols, checked with ``isinstance`` at the edge so that a backend lacking one answers
NotImplemented. docs/design-notes.md ("The backend seam") says why the line runs here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from runtime.cgroups import Stats
from runtime.types import CreateConfig, ExecConfig, RestoreSource


@runtime_checkable
class ContainerHandle(Protocol):
    """One created container. Its init exists (``pid`` is its real host PID) but has not run."""

    @property
    def pid(self) -> int:
        """Host PID of the container's init (``NSpid: <pid> 1``)."""
        ...

    async def start(self) -> None:
        """Let the init run (OCI created → running). Raises errdefs on failure."""
        ...

    async def wait(self) -> int:
        """Wait for the init to exit; its exit code, or 128 + signal. Callable many times."""
        ...

    def kill(self, signal: int, all: bool = False) -> None:
        """Signal the init (or, with ``all``, every process of the container) from the host.

        Raises ``errdefs.NotFound`` when the init has already exited.
        """
        ...

    def pids(self) -> list[int]:
        """Host PIDs of every process of the container (init first when known)."""
        ...

    async def delete(self) -> None:
        """Release everything once the init has exited (or was never started): kill what
        remains, close IO, unmount the rootfs, remove the backend's files. Idempotent.
        (The poststop hooks are the supervisor's, after this.)"""
        ...


class Backend(Protocol):
    """Creates containers. One instance per daemon (or per OCI CLI command)."""

    #: The registry's key for this backend (runtime.registry), stored in each task's record.
    name: str

    async def create(self, config: CreateConfig) -> ContainerHandle:
        """Create the container with its init held before the user's program runs.

        ``config.spec`` has passed :func:`runtime.oci.check_spec` (the supervisor validates
        before anything is made); the backend still refuses what it cannot express, with an
        errdefs error naming the field. On failure nothing is left behind (mounts, backend
        objects, files, processes) and an errdefs error names the problem.
        """
        ...


class Cleanup(Protocol):
    """A backend's half of the short-lived ``delete`` action (runtime.registry serves it,
    keyed on the backend name in the task's record): standard library only, synchronous,
    idempotent, well within containerd's 5 s. Also what ``proxmox-lxcri delete`` calls."""

    def __call__(self, state_dir: Path, bundle: Path) -> tuple[int, int]:
        """Stop and remove whatever is left of a container; returns (pid, exit status)."""
        ...


# -- optional capabilities ----------------------------------------------------------------------
# Checked with isinstance() on a ContainerHandle (or on the Backend) by the supervisor; a
# backend without one answers NotImplemented for the RPCs that need it.


@runtime_checkable
class Restorer(Protocol):
    """A backend that creates a container from process images (``CreateConfig.restore``)."""

    async def restore(self, config: CreateConfig, source: RestoreSource) -> ContainerHandle:
        """Like :meth:`Backend.create`, but the container's processes are restored from
        ``source`` instead of its program starting; they stay stopped until ``start``
        (the OCI "created" state). An unknown ``source.format`` is InvalidArgument."""
        ...


@runtime_checkable
class Checkpointable(Protocol):
    """A running container whose processes the backend can dump (the process half of the
    Task API's Checkpoint; storage snapshots the filesystem around it)."""

    async def checkpoint(self, images: Path, *, leave_running: bool) -> None:
        """Dump every process of the container into ``images`` (a new directory) in a form
        :meth:`Restorer.restore` reads. Without ``leave_running`` they end after the dump and
        the task exits with 137, like runc's ``checkpoint --exit``. A container that was not
        created ``checkpointable`` raises FailedPrecondition saying why."""
        ...


@runtime_checkable
class SelfCheckpointing(Protocol):
    """A container whose backend keeps its filesystem checkpoints itself (the Proxmox
    backend's CT snapshots) instead of the storage provisioner's ZFS snapshots."""

    async def checkpoint_filesystem(self, directory: Path) -> str:
        """Checkpoint the container's files; record what was taken in ``directory`` (the
        Task API's checkpoint path); returns the checkpoint's name."""
        ...


@runtime_checkable
class Attachable(Protocol):
    """A backend that can take up a container it made in another process, from what it
    persisted in the container's state dir: the OCI CLI runs each command in its own process
    (create, then start, kill, exec, pause… each later)."""

    def attach(self, state_dir: Path) -> ContainerHandle:
        """A handle on the container: ``wait`` ends when its init does; ``start`` releases a
        created one. NotFound when nothing of it is left."""
        ...


@runtime_checkable
class ProcessHandle(Protocol):
    """An exec'd process, already running."""

    @property
    def pid(self) -> int:
        """Host PID of the process inside the container."""
        ...

    async def wait(self) -> int:
        """Its exit code, or 128 + signal. Callable many times."""
        ...

    def kill(self, signal: int) -> None:
        """Raises ``errdefs.NotFound`` once it has exited."""
        ...

    def resize(self, width: int, height: int) -> None:
        """Set its terminal's size (no-op without a terminal)."""
        ...

    def close_stdin(self) -> None: ...

    async def close(self) -> None:
        """Release its IO once it has exited (its output reaches EOF for the client)."""
        ...


@runtime_checkable
class Execer(Protocol):
    async def exec(self, config: ExecConfig) -> ProcessHandle:
        """Start a new process in the running container (all its namespaces, cgroup and
        security settings)."""
        ...


@runtime_checkable
class Terminal(Protocol):
    def resize(self, width: int, height: int) -> None: ...

    def close_stdin(self) -> None: ...


@runtime_checkable
class Pausable(Protocol):
    async def pause(self) -> None: ...

    async def resume(self) -> None: ...


@runtime_checkable
class FinishesCreate(Protocol):
    """A handle whose init finishes its set-up only after the create-time hooks (prestart,
    createRuntime, createContainer), as runc's init does: the supervisor calls this once
    they have run. Raises errdefs with the set-up's error (the create's)."""

    async def finish_create(self) -> None: ...


@runtime_checkable
class StatsSource(Protocol):
    def stats(self) -> Stats:
        """The container's cgroup figures; ``errdefs.NotFound`` when it has none."""
        ...


@runtime_checkable
class Updatable(Protocol):
    async def update(self, resources: dict[str, Any]) -> None:
        """Apply OCI ``LinuxResources`` to the running container."""
        ...


@runtime_checkable
class OomWatchable(Protocol):
    def watch_oom(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time the kernel's OOM killer kills in the container."""
        ...


@runtime_checkable
class Monitored(Protocol):
    @property
    def monitor_pid(self) -> int:
        """A host process, not in the container, that exits with the container's status (the
        OCI CLI's ``--pid-file`` names it, so that a subreaper that waits for it learns the
        status; 0 if there is none)."""
        ...
