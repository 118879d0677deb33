"""The network :class:`runtime.provision.Provisioner` (the seam the supervisor calls).

Thin on purpose: every shim daemon constructs it, and most containers have no shim-managed
network (joined namespaces, or no ``[network]`` configuration). Those return at once, without
importing the rest of the package (about 25 ms, ``python -X importtime``) or pyroute2; the
building is in :mod:`network.managed`, tear-down in :mod:`network.cleanup`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.config import ANNOTATION_PREFIX
from runtime.errdefs import Internal
from runtime.types import CreateConfig

if TYPE_CHECKING:
    from network.managed import ManagedNetworks


class NetworkProvisioner:
    name = "network"

    def __init__(self, state_dir: Path) -> None:
        """``state_dir``: leases and records when ``[network] state_dir`` is not set (the
        composition root passes ``<state root>/network``)."""
        self.default_state_dir = state_dir
        self._managed: ManagedNetworks | None = None

    async def prepare(self, config: CreateConfig) -> CreateConfig:
        """The config whose spec joins the container's shim-managed network namespace, or
        ``config`` itself when the container gets no shim-managed network."""
        backend = config.settings.get("backend") or {}
        if isinstance(backend, dict) and backend.get("type") == "proxmox":
            return config  # the CT's net0 is Proxmox's (runtime/proxmox/ctconfig.py)
        annotations = config.spec.get("annotations") or {}
        asked = isinstance(annotations, dict) and any(
            str(k).startswith(ANNOTATION_PREFIX) for k in annotations)
        if "network" not in config.settings and not asked:
            return config  # no pools and nothing asked: nothing to decide
        if self._managed is None:
            from network.managed import ManagedNetworks

            self._managed = ManagedNetworks(self.default_state_dir)
        return await self._managed.prepare(config)

    async def release(self, config: CreateConfig) -> None:
        """Leave (and, as the last member, remove) the container's network; idempotent."""
        from network import cleanup

        if not (config.state_dir / cleanup.POINTER).exists():
            return
        errors = await asyncio.to_thread(cleanup.leave, config.state_dir)
        if errors:
            raise Internal(f"network of {config.id}: " + "; ".join(errors))
