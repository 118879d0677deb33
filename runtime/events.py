"""Domain events the lifecycle core emits; ``shim.events`` maps them to containerd topics.

Events are handed to an :class:`EventSink` synchronously, in the order they happen; the sink
publishes them in that order (runtime v2 README ordering table, shim-protocol.md section 4.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from runtime.types import Mount, Stdio


@dataclass(frozen=True)
class TaskCreated:
    container_id: str
    bundle: str
    rootfs: tuple[Mount, ...]
    stdio: Stdio
    checkpoint: str
    pid: int


@dataclass(frozen=True)
class TaskStarted:
    container_id: str
    pid: int


@dataclass(frozen=True)
class ProcessExited:
    container_id: str
    #: The process id: the container id for the init, the exec id for an exec.
    id: str
    pid: int
    exit_status: int
    exited_at: float


@dataclass(frozen=True)
class TaskDeleted:
    container_id: str
    pid: int
    exit_status: int
    exited_at: float


@dataclass(frozen=True)
class ExecAdded:
    container_id: str
    exec_id: str


@dataclass(frozen=True)
class ExecStarted:
    container_id: str
    exec_id: str
    pid: int


@dataclass(frozen=True)
class TaskPaused:
    container_id: str


@dataclass(frozen=True)
class TaskResumed:
    container_id: str


@dataclass(frozen=True)
class TaskOOM:
    container_id: str


Event = (TaskCreated | TaskStarted | ProcessExited | TaskDeleted | ExecAdded | ExecStarted
         | TaskPaused | TaskResumed | TaskOOM)


class EventSink(Protocol):
    def publish(self, event: Event) -> None:
        """Queue ``event``; never blocks and never raises for delivery problems."""
        ...


class MemorySink:
    """Collects events in a list (tests, and the operator CLI's dry runs)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, event: Event) -> None:
        self.events.append(event)
