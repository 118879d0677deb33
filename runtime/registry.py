"""The backends this runtime knows, by name: the one place that maps a name to code.

Three callers need a backend by name, and each must find the same one:

- the shim daemon builds the backend that serves its tasks (:func:`open_backend`);
- the OCI CLI (``proxmox-lxcri create``, ``start``…) builds it in every command's process;
- the short-lived ``delete`` action, after a shim died, cleans up with the backend that made the
  task (:func:`cleanup`), keyed on the name the task's record keeps
  (:attr:`runtime.store.TaskRecord.backend`).

Importing this module costs nothing beyond the standard library: the ``delete`` action must
stay light (shim/delete.py), so each backend's modules load only when it is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime import errdefs

if TYPE_CHECKING:
    from runtime.backend import Backend, Cleanup
    from runtime.reaper import Reaper

#: The backend of a task whose configuration names none.
DEFAULT = "lxc"


@dataclass(frozen=True)
class BackendContext:
    """What a backend factory gets: the daemon's (or the CLI command's) reaper, the state
    root, the operator's configuration, and whether the caller is the OCI CLI (whose
    containers and execs inherit its stdio without stdio paths, as runc's do)."""

    reaper: Reaper
    root: Path
    settings: dict[str, Any] = field(default_factory=dict)
    cli: bool = False
    #: (OCI CLI) a created container stays held when the creating process is gone.
    hold: bool = False


def _lxc(ctx: BackendContext) -> Backend:
    from runtime.lxc.backend import LxcBackend

    return LxcBackend(ctx.reaper, ctx.root / "lxc", hold_gate=ctx.hold, inherit_stdio=ctx.cli)


def _proxmox(ctx: BackendContext) -> Backend:
    from runtime.proxmox.backend import ProxmoxBackend

    if ctx.cli:
        raise errdefs.NotImplementedErr("the OCI CLI does not drive the proxmox backend")
    return ProxmoxBackend(ctx.reaper, ctx.root)


@dataclass(frozen=True)
class _Entry:
    factory: Callable[[BackendContext], Backend]
    #: "module:function" of its Cleanup, imported only when a delete needs it.
    cleanup: str


_BACKENDS: dict[str, _Entry] = {
    "lxc": _Entry(_lxc, "runtime.lxc.cleanup:cleanup"),
    "proxmox": _Entry(_proxmox, "runtime.proxmox.cleanup:cleanup"),
}


def names() -> list[str]:
    return sorted(_BACKENDS)


def register(name: str, factory: Callable[[BackendContext], Backend], cleanup: str) -> None:
    """Add a backend (tests, and later backends that live outside this module)."""
    _BACKENDS[name] = _Entry(factory, cleanup)


def _entry(name: str) -> _Entry:
    entry = _BACKENDS.get(name)
    if entry is None:
        raise errdefs.InvalidArgument(
            f"backend {name!r}: unknown (known: {', '.join(names())})")
    return entry


def open_backend(name: str, ctx: BackendContext) -> Backend:
    """A new instance of backend ``name``."""
    backend = _entry(name).factory(ctx)
    assert backend.name == name, (backend.name, name)  # the record keeps backend.name
    return backend


def cleanup(name: str) -> Cleanup:
    """Backend ``name``'s clean-up for the ``delete`` action."""
    module, _, attr = _entry(name).cleanup.partition(":")
    func: Cleanup = getattr(importlib.import_module(module), attr)
    return func


def cleanup_any(name: str, state_dir: Path, bundle: Path) -> tuple[int, int]:
    """Clean up with backend ``name``; with no name (a shim that died before it recorded the
    task), with every backend in turn: each is idempotent and finds nothing of a container it
    did not make. Returns the (pid, exit status) of the first that found something."""
    if name:
        return cleanup(name)(state_dir, bundle)
    found: tuple[int, int] | None = None
    for candidate in names():
        pid, status = cleanup(candidate)(state_dir, bundle)
        if found is None and pid:
            found = (pid, status)
    return found or (0, 128 + 9)


class SelectingBackend:
    """The daemon's backend: each task's configuration chooses (``[backend] type``, the file
    containerd's runtime option ``config_path`` names, so a RuntimeClass chooses); each
    backend is opened on first use. Handles carry ``backend_name``, which the task's record
    keeps for the ``delete`` action."""

    name = DEFAULT

    def __init__(self, ctx: BackendContext) -> None:
        self._ctx = ctx
        self._open: dict[str, Backend] = {}

    def _for(self, settings: dict[str, Any]) -> tuple[str, Backend]:
        section = settings.get("backend") or {}
        name = str(section.get("type", DEFAULT)) if isinstance(section, dict) else ""
        backend = self._open.get(name)
        if backend is None:
            backend = self._open[name] = open_backend(name, self._ctx)
        return name, backend

    async def create(self, config: Any) -> Any:
        name, backend = self._for(config.settings)
        handle = await backend.create(config)
        _tag(handle, name)
        return handle

    async def restore(self, config: Any, source: Any) -> Any:
        from runtime.backend import Restorer

        name, backend = self._for(config.settings)
        if not isinstance(backend, Restorer):
            raise errdefs.NotImplementedErr(f"the {name} backend cannot restore processes")
        handle = await backend.restore(config, source)
        _tag(handle, name)
        return handle


    async def aclose(self) -> None:
        """Release what the opened backends hold (their own ``aclose``, where they have one)."""
        for backend in self._open.values():
            close = getattr(backend, "aclose", None)
            if close is not None:
                await close()


def _tag(handle: Any, name: str) -> None:
    try:
        handle.backend_name = name
    except AttributeError:  # a handle with __slots__: the record keeps the default name
        pass
