"""What the backend persists per container (``<state dir>/pve-state.json``): enough for the
``delete`` action to find the CT and reach the API after the shim died. Never the token
secret (only the path of its file). Standard library only."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FILENAME = "pve-state.json"


@dataclass
class PveState:
    vmid: int
    url: str
    node: str
    token_id: str
    token_secret_file: str
    ca_file: str
    conf_dir: str
    pid: int = 0
    pid_start_time: int = 0
    request_timeout: float = 30.0
    #: The IPAM lease of net0's address (pool, state dir, owner), released with the CT.
    lease_pool: str = ""
    lease_dir: str = ""
    lease_owner: str = ""


def save(state_dir: Path, st: PveState) -> None:
    path = state_dir / FILENAME
    tmp = path.with_name(f".{FILENAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(st), sort_keys=True))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load(state_dir: Path) -> PveState | None:
    try:
        data = json.loads((state_dir / FILENAME).read_text())
        return PveState(**data)
    except (OSError, ValueError, TypeError):
        return None


def remove(state_dir: Path) -> None:
    (state_dir / FILENAME).unlink(missing_ok=True)
