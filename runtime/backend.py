"""The narrow seam between the lifecycle core and a container technology.

A backend knows nothing about protobuf or ttrpc; the core knows nothing about LXC or Proxmox.
Optional capabilities (exec, pause, stats, update, checkpoint) are separate small Protocols,
checked with ``isinstance`` at the edge so that a backend lacking one answers NotImplemented.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from runtime.cgroups import Stats
from runtime.types import CreateConfig, ExecConfig


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
        remains, close IO, unmount the rootfs, remove the backend's files. Idempotent."""
        ...


class Backend(Protocol):
    """Creates containers. One instance per daemon."""

    name: str

    async def create(self, config: CreateConfig) -> ContainerHandle:
        """Create the container with its init held before the user's program runs.

        On failure nothing is left behind (mounts, LXC container, files, processes) and an
        errdefs error names the problem.
        """
        ...


class Cleanup(Protocol):
    """What the short-lived ``delete`` action calls: standard library only, synchronous."""

    def __call__(self, state_dir: Path, bundle: Path) -> tuple[int, int]:
        """Stop and remove whatever is left of a container; returns (pid, exit status)."""
        ...


# -- optional capabilities ----------------------------------------------------------------------
# Checked with isinstance() on a ContainerHandle by the supervisor; a backend without one
# answers NotImplemented for the RPCs that need it.


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
