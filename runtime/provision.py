"""Provisioners: the seam through which storage and networking take part in a container's
life without the backend knowing about them.

Before the backend creates a container, each provisioner may rewrite its
:class:`~runtime.types.CreateConfig`: storage replaces the rootfs mounts with a bind mount of
the container's ZFS dataset; networking puts a network namespace it prepared into the spec's
``linux.namespaces`` so the container joins it (the same path CNI uses). After the backend
deleted the container, or when a later step of create fails, each provisioner releases what it
made, in reverse order. Each persists what it made under ``config.state_dir`` so that the
short-lived ``delete`` action can release it too, with its standard-library ``cleanup``.
"""

from __future__ import annotations

from typing import Protocol

from runtime.types import CreateConfig


class Provisioner(Protocol):
    #: Short name; also the file ``<state_dir>/<name>.json`` it persists its state in.
    name: str

    async def prepare(self, config: CreateConfig) -> CreateConfig:
        """Make what the container needs and return the config the backend should use.

        On failure it leaves nothing behind and raises an errdefs error naming the problem.
        """
        ...

    async def release(self, config: CreateConfig) -> None:
        """Undo :meth:`prepare` (idempotent; ``config`` is the one ``prepare`` returned)."""
        ...
