"""Where the runtime keeps its state (DESIGN.md section 9), as plain strings.

The import-light core of ``runtime.store``: the short-lived ``start`` and ``delete`` actions
need these paths before they know whether they need anything heavier.
"""

from __future__ import annotations

import os

DEFAULT_ROOT = "/run/proxmox-lxcri"


def root() -> str:
    """The state root: ``$PROXMOX_LXCRI_ROOT`` (containerd passes its environment to shims)."""
    return os.environ.get("PROXMOX_LXCRI_ROOT") or DEFAULT_ROOT


def container_dir(namespace: str, id: str, state_root: str | None = None) -> str:
    return os.path.join(state_root or root(), "containers", namespace, id)
