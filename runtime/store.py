"""On-disk snapshots of task state under the state root (DESIGN.md section 9).

Layout: ``<root>/containers/<namespace>/<id>/state.json``; the namespace level keeps two
containerd namespaces that reuse an id apart. Writes are atomic (temp file, fsync, rename), so a
reader (the ``delete`` action, the operator CLI, a restarted daemon) sees the old or the new
snapshot, never half of one. Standard library only: the ``delete`` action imports it.

Modes (issue 12, docs/security.md "State files"): state files are 0600 and a container's
directory 0700, so no other local user reads a container's spec, environment or annotations.
The levels above it (the root, ``containers``, ``<namespace>``) are 0711: not listable, but
traversable, because a container with its own user namespace reaches bind sources in its state
directory as its mapped root (measured with LXC 5.0.2: a bind source under a 0700 directory
fails with "Failed to setup mount entries", under 0711 it works); such a container's own
directory is therefore 0711 too (:func:`private_dir` ``traverse``), its files still 0600.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import paths

DEFAULT_ROOT = paths.DEFAULT_ROOT
SCHEMA = 1


def state_root() -> Path:
    """The state root: ``$PROXMOX_LXCRI_ROOT`` (containerd passes its environment to shims)."""
    return Path(paths.root())


FILE_MODE = 0o600
DIR_MODE = 0o700
#: Directories others may pass through to a known name but not list (see the module doc).
TRAVERSE_MODE = 0o711


def private_dir(path: Path, *, traverse: bool = False) -> None:
    """Create ``path`` with mode 0700 (0711 with ``traverse``), and any missing parent with
    0711; an existing ``path`` gets the mode too. Explicit chmod: mkdir's mode is cut by the
    umask and ignored for an existing directory."""
    missing: list[Path] = []
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for parent in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a concurrent creator won: keep its mode
            parent.mkdir(mode=TRAVERSE_MODE)
            os.chmod(parent, TRAVERSE_MODE)
    path.mkdir(mode=DIR_MODE, exist_ok=True)
    os.chmod(path, TRAVERSE_MODE if traverse else DIR_MODE)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically to ``path`` with mode 0600 (temp file, fsync, rename). The
    mode is set on the open descriptor, so the data is never readable by others, also not when
    a crashed writer left the temp file behind with another mode."""
    if not path.parent.is_dir():
        private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        with open(fd, "w", encoding="utf-8", closefd=False) as f:
            f.write(text)
            f.flush()
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: Any) -> None:
    write_private(path, json.dumps(data, indent=1, sort_keys=True))


def read_json(path: Path) -> Any | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


#: ``TaskRecord.owner`` of the containers the OCI CLI (``proxmox-lxcri create``) made; a
#: shim's tasks have none.
CLI_OWNER = "proxmox-lxcri"


@dataclass
class TaskRecord:
    """One task's ``state.json``: the same record for a shim's task and for a container of
    the OCI CLI, so that ``delete``, ``list`` and the CLI read either one the same way."""

    id: str
    namespace: str
    bundle: str
    #: The backend that made it (runtime.registry's key); "" in a record from before it was
    #: known, which the registry treats as "try every backend".
    backend: str = ""
    #: runtime.types.Status value: created, running, paused, stopped.
    status: str = "created"
    #: Host PID of the container's init.
    pid: int = 0
    exit_status: int | None = None
    exited_at: float | None = None
    #: The shim daemon serving it; 0 for the OCI CLI's containers (no daemon watches them).
    shim_pid: int = 0
    #: CLI_OWNER for the OCI CLI's containers, "" for a shim's.
    owner: str = ""
    #: The process the OCI CLI's ``--pid-file`` names (the backend's monitor), 0 if none.
    monitor_pid: int = 0
    #: RFC 3339 creation time (the OCI CLI's ``state`` shows it).
    created: str = ""
    oci_version: str = ""
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskRecord:
        """Tolerant of unknown keys (a newer writer) and of a missing optional one; a value
        of the wrong type is dropped to its default rather than trusted."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            kind = {"id": str, "namespace": str, "bundle": str, "backend": str, "status": str,
                    "owner": str, "created": str, "oci_version": str, "pid": int,
                    "shim_pid": int, "monitor_pid": int, "annotations": dict}.get(f.name)
            if kind is not None and not isinstance(value, kind):
                continue
            if f.name in ("exit_status",) and not isinstance(value, int | None):
                continue
            if f.name == "exited_at" and not isinstance(value, int | float | None):
                continue
            values[f.name] = value
        for key in ("id", "namespace", "bundle"):
            values.setdefault(key, "")
        return cls(**values)


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root

    def container_dir(self, namespace: str, id: str) -> Path:
        return self.root / "containers" / namespace / id

    def save(self, namespace: str, id: str, state: dict[str, Any]) -> None:
        directory = self.container_dir(namespace, id)
        if not directory.is_dir():
            private_dir(directory)
        # The levels above may have been made by another writer (storage, network) with
        # mkdir's default mode: never listable by others.
        for level in (directory.parent.parent, directory.parent):
            with contextlib.suppress(FileNotFoundError):
                if level.stat().st_mode & 0o777 != TRAVERSE_MODE:
                    os.chmod(level, TRAVERSE_MODE)
        atomic_write_json(directory / "state.json", {"schema": SCHEMA, **state})

    def load(self, namespace: str, id: str) -> dict[str, Any] | None:
        data = read_json(self.container_dir(namespace, id) / "state.json")
        return data if isinstance(data, dict) else None

    def save_record(self, record: TaskRecord) -> None:
        self.save(record.namespace, record.id, record.to_json())

    def load_record(self, namespace: str, id: str) -> TaskRecord | None:
        data = self.load(namespace, id)
        if data is None:
            return None
        record = TaskRecord.from_json(data)
        record.namespace, record.id = record.namespace or namespace, record.id or id
        return record

    def remove(self, namespace: str, id: str) -> None:
        shutil.rmtree(self.container_dir(namespace, id), ignore_errors=True)

    def list(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Every (namespace, id, state) snapshot under the root."""
        out: list[tuple[str, str, dict[str, Any]]] = []
        base = self.root / "containers"
        for ns_dir in sorted(base.iterdir()) if base.is_dir() else []:
            for c_dir in sorted(ns_dir.iterdir()) if ns_dir.is_dir() else []:
                state = self.load(ns_dir.name, c_dir.name)
                if state is not None:
                    out.append((ns_dir.name, c_dir.name, state))
        return out
