"""Frozen dataclasses that cross layers (no protobuf below the RPC edge)."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Mount:
    """One rootfs mount from the snapshotter, applied in order onto ``<bundle>/rootfs``."""

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stdio:
    """Client-side stdio paths (FIFOs, ``file://`` or ``binary://`` URIs); "" = no stream."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


@dataclass(frozen=True)
class CreateConfig:
    """Everything a backend needs to create a container (the init held, not yet running)."""

    id: str
    namespace: str
    bundle: Path
    #: The parsed OCI runtime spec (``config.json``).
    spec: dict[str, Any]
    rootfs: tuple[Mount, ...] = ()
    stdio: Stdio = Stdio()
    #: A directory the backend owns for this container (state, generated config, FIFOs).
    state_dir: Path = Path()
    #: Decoded runtime options (may be empty).
    options: dict[str, Any] = field(default_factory=dict)
    #: The operator's configuration (raw TOML mapping, see :mod:`runtime.config`).
    settings: dict[str, Any] = field(default_factory=dict)
    #: Create the container so that its processes can be checkpointed later (the handle is
    #: then :class:`runtime.backend.Checkpointable`). Set by the storage provisioner where
    #: process checkpoints are wanted and work; how a backend achieves it is its own affair.
    checkpointable: bool = False
    #: Where the task's processes come from instead of starting its program (a task created
    #: from a checkpoint with process images); only a :class:`runtime.backend.Restorer`
    #: backend accepts it.
    restore: RestoreSource | None = None


@dataclass(frozen=True)
class RestoreSource:
    """Process images a task is restored from, as a :class:`runtime.backend.Checkpointable`
    handle wrote them (the checkpoint's ``images`` directory)."""

    images: Path
    #: The images' format: a backend refuses one it cannot read.
    format: str = "criu"


@dataclass(frozen=True)
class ExecConfig:
    """An exec process: the OCI ``Process`` JSON plus its stdio."""

    exec_id: str
    process: dict[str, Any]
    stdio: Stdio = Stdio()


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended. ``status`` is the code, or 128 + signal for a signal death."""

    pid: int
    status: int
    exited_at: float = field(default_factory=time.time)


class Status(enum.Enum):
    """Process states (containerd.v1.types.Status, plus DELETED which is never reported)."""

    CREATED = "created"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    STOPPED = "stopped"
    DELETED = "deleted"
