"""When a shim daemon has nothing left to serve: the idle and orphan watch (issue 12, item 8).

containerd ends a shim with ``Shutdown`` after the last task's ``Delete`` (shim-protocol.md
§2.12), and the runc shim exits only then. When a client gives up while a task is being created
(``ctr run`` killed), containerd closes its connection, runs ``delete`` and removes the bundle,
but a daemon still busy creating never hears ``Shutdown``: 7 times in 25 such a daemon stayed,
listening forever. So the daemon watches itself:

* a task whose bundle directory is gone is an orphan: containerd removes a bundle only once it
  has given the task up (after ``Delete``, or after a failed ``Create``, §2.7), so nobody can
  ever reach it again. The watch kills it and deletes it;
* with no task and no request in flight for ``grace`` seconds the daemon stops (its socket file
  is removed on the way out). Legitimately a shim never idles that long: containerd calls
  ``Create`` right after ``start``, and ``Shutdown`` right after the last ``Delete``. Once the
  daemon's own bundle is gone too, one quiet check interval is enough.

``$PROXMOX_LXCRI_SHIM_IDLE_GRACE`` sets ``grace`` in seconds (default 60; tests use a few).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from runtime.errdefs import ErrdefsError

if TYPE_CHECKING:
    from runtime.supervisor import Supervisor

log = logging.getLogger(__name__)

GRACE_ENV = "PROXMOX_LXCRI_SHIM_IDLE_GRACE"
DEFAULT_GRACE = 60.0
#: How long an orphan may take to die after SIGKILL before the watch tries again later.
REAP_TIMEOUT = 10.0


def grace_from_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> float:
    """``$PROXMOX_LXCRI_SHIM_IDLE_GRACE`` as positive seconds; the default when unset or
    unusable (a warning names the value: a typo must not keep shims alive forever)."""
    raw = environ.get(GRACE_ENV, "")
    if not raw:
        return DEFAULT_GRACE
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        log.warning("%s=%r is not a positive number of seconds; using %.0f", GRACE_ENV, raw,
                    DEFAULT_GRACE)
        return DEFAULT_GRACE
    return value


class Tasks(Protocol):
    """What the watch needs of the supervisor (runtime.supervisor.Supervisor)."""

    def __len__(self) -> int: ...

    def ids(self) -> list[str]: ...

    def bundle_of(self, id: str) -> Path | None: ...

    async def reap(self, id: str) -> None: ...


class Activity(Protocol):
    """What the watch needs of the ttrpc server (shim.ttrpc.Server)."""

    @property
    def requests_in_flight(self) -> int: ...

    @property
    def last_activity(self) -> float: ...


class IdleWatch:
    """Calls ``stop`` once the daemon has had nothing to serve for long enough.

    Args:
        tasks: the daemon's tasks.
        server: the ttrpc server (requests in flight, time of the last request).
        bundle: the daemon's own bundle (its working directory).
        stop: what ends the daemon.
        grace: seconds without task and request before ``stop``.
    """

    def __init__(self, tasks: Tasks, server: Activity, bundle: Path, stop: Callable[[], None],
                 grace: float) -> None:
        self._tasks = tasks
        self._server = server
        self._bundle = bundle
        self._stop = stop
        self.grace = grace
        self.interval = min(max(grace / 4, 0.05), 5.0)
        self._busy_at = -math.inf  # when a task or a request was last seen

    async def run(self) -> None:
        """Check every :attr:`interval` until ``stop`` was called; cancel to end early."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.reap_orphans()
                if self.check():
                    return
            except Exception:  # the watch must outlive a bad look, or shims leak again
                log.exception("idle watch: check failed")

    def check(self, now: float | None = None) -> bool:
        """One look; True (and ``stop`` called) when the daemon should end."""
        now = time.monotonic() if now is None else now
        if len(self._tasks) or self._server.requests_in_flight:
            self._busy_at = now
            return False
        quiet = now - max(self._busy_at, self._server.last_activity)
        bundle_gone = not self._bundle.is_dir()
        if quiet >= self.grace or (bundle_gone and quiet >= self.interval):
            log.info("no task for %.1fs%s: shim %d exits", quiet,
                     " and its bundle is gone" if bundle_gone else "", os.getpid())
            self._stop()
            return True
        return False

    async def reap_orphans(self) -> None:
        """Kill and delete every task whose bundle directory is gone."""
        for id in self._tasks.ids():
            bundle = self._tasks.bundle_of(id)
            if bundle is None or bundle.is_dir():
                continue
            log.warning("task %s: its bundle %s is gone, containerd gave it up: killing and "
                        "deleting it", id, bundle)
            try:
                async with asyncio.timeout(REAP_TIMEOUT):
                    await self._tasks.reap(id)
            except (ErrdefsError, TimeoutError) as exc:
                log.warning("task %s: cannot remove the orphan yet: %s", id, exc)


class SupervisorTasks:
    """:class:`Tasks` over a runtime.supervisor.Supervisor, through its public calls only."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._sup = supervisor

    def __len__(self) -> int:
        return len(self._sup)

    def ids(self) -> list[str]:
        return self._sup.ids()

    def bundle_of(self, id: str) -> Path | None:
        try:
            return Path(self._sup.state(id, "").bundle)
        except ErrdefsError:
            return None  # still being created (or gone meanwhile): not judged yet

    async def reap(self, id: str) -> None:
        try:
            self._sup.kill(id, "", signal.SIGKILL, True)
        except ErrdefsError:
            pass  # already stopped
        await self._sup.wait(id, "")
        await self._sup.delete(id, "")

