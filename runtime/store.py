"""On-disk snapshots of task state under the state root (DESIGN.md section 9).

Layout: ``<root>/containers/<namespace>/<id>/state.json``; the namespace level keeps two
containerd namespaces that reuse an id apart. Writes are atomic (temp file, fsync, rename), so a
reader (the ``delete`` action, the operator CLI, a restarted daemon) sees the old or the new
snapshot, never half of one. Standard library only: the ``delete`` action imports it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from runtime import paths

DEFAULT_ROOT = paths.DEFAULT_ROOT
SCHEMA = 1


def state_root() -> Path:
    """The state root: ``$PROXMOX_LXCRI_ROOT`` (containerd passes its environment to shims)."""
    return Path(paths.root())


def atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root

    def container_dir(self, namespace: str, id: str) -> Path:
        return self.root / "containers" / namespace / id

    def save(self, namespace: str, id: str, state: dict[str, Any]) -> None:
        atomic_write_json(self.container_dir(namespace, id) / "state.json",
                          {"schema": SCHEMA, **state})

    def load(self, namespace: str, id: str) -> dict[str, Any] | None:
        data = read_json(self.container_dir(namespace, id) / "state.json")
        return data if isinstance(data, dict) else None

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
