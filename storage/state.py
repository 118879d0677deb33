"""``<state_dir>/storage.json``: what the storage provisioner made for a container.

Written before the dataset is made and removed after it is gone, so the ``delete`` action can
finish the job after a shim crash. Standard library only (``delete`` imports it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.store import write_private

STATE_FILE = "storage.json"


def write_state(state_dir: Path, data: dict[str, Any]) -> None:
    # 0600 in a private directory (runtime.store: issue 12, docs/security.md "State files").
    write_private(state_dir / STATE_FILE, json.dumps(data, indent=1, sort_keys=True))


def read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_state(state_dir: Path) -> None:
    (state_dir / STATE_FILE).unlink(missing_ok=True)
