"""OCI hooks (config.md "POSIX-platform Hooks", runtime.md "Lifecycle"): which hooks run, the
state JSON they read on stdin, and a runner through the daemon's Reaper.

Where each kind runs (the backend calls :func:`run`):

======================  =======================================  ==============================
kind                    when (this runtime)                      on failure (runtime.md)
======================  =======================================  ==============================
prestart, createRuntime create, once the init waits at its gate  error; the container is
                        after its set-up (namespaces, mounts)    stopped and deleted
createContainer         right after createRuntime, on the host   same
startContainer          start, before the gate lets the program  error; the container is
                        run, inside the container's namespaces   stopped (status 128+SIGKILL)
                        and root (``nsenter``)
poststart               start, after the program was exec'd      warning logged, start succeeds
poststop                delete, after the container stopped      warning logged, delete goes on
======================  =======================================  ==============================

Each hook gets ``path`` executed with ``args[1:]`` (argv[0] is the path itself: the Reaper
spawns argv as is), exactly ``env``, the state JSON on stdin, and is killed after ``timeout``
seconds when one is given.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runtime.errdefs import DeadlineExceeded, FailedPrecondition
from runtime.reaper import Reaper

log = logging.getLogger(__name__)

#: The state the hooks of each kind see (runtime.md "State": creating, created, running,
#: stopped).
STATUS = {"prestart": "creating", "createRuntime": "creating", "createContainer": "creating",
          "startContainer": "created", "poststart": "running", "poststop": "stopped"}
#: Kinds whose failure is an error (the others only log a warning).
FATAL = frozenset({"prestart", "createRuntime", "createContainer", "startContainer"})


@dataclass(frozen=True)
class Hook:
    field: str  # "hooks.createRuntime[0]": for messages
    path: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    timeout: float | None


def hooks_of(spec: dict[str, Any], kind: str) -> list[Hook]:
    """The validated hooks of ``kind`` (:func:`runtime.oci.check_spec` checked the shape)."""
    entries = (spec.get("hooks") or {}).get(kind) or []
    return [Hook(field=f"hooks.{kind}[{i}]", path=h["path"], args=tuple(h.get("args") or ()),
                 env=tuple(h.get("env") or ()), timeout=h.get("timeout"))
            for i, h in enumerate(entries)]


def state_json(*, id: str, status: str, pid: int, bundle: str,
               annotations: dict[str, str], oci_version: str = "1.0.2") -> bytes:
    """The container's state (runtime.md "State"); ``pid`` is omitted once stopped."""
    state: dict[str, Any] = {"ociVersion": oci_version, "id": id, "status": status,
                             "bundle": bundle, "annotations": annotations}
    if status != "stopped" and pid > 0:
        state["pid"] = pid
    return json.dumps(state, sort_keys=True).encode()


def argv(hook: Hook, prefix: Sequence[str] = ()) -> list[str]:
    """The command line: ``prefix`` (e.g. nsenter …), the path, then ``args[1:]``."""
    return [*prefix, hook.path, *hook.args[1:]]


async def run(reaper: Reaper, hooks: Sequence[Hook], state: bytes, *,
              prefix: Sequence[str] = (), fatal: bool = True,
              container_id: str = "") -> None:
    """Run ``hooks`` in order. ``fatal``: the first failure raises (FailedPrecondition, or
    DeadlineExceeded on timeout) and the rest do not run; otherwise each failure is logged as
    a warning and the next hook runs (poststart, poststop)."""
    for hook in hooks:
        try:
            await _run_one(reaper, hook, state, prefix)
        except (FailedPrecondition, DeadlineExceeded) as exc:
            if fatal:
                raise
            log.warning("%s", exc, extra={"container_id": container_id})


async def _run_one(reaper: Reaper, hook: Hook, state: bytes, prefix: Sequence[str]) -> None:
    env = dict(item.split("=", 1) for item in hook.env)
    try:
        done = await reaper.run(argv(hook, prefix), input=state, timeout=hook.timeout, env=env,
                                cwd="/")
    except TimeoutError:
        raise DeadlineExceeded(f"{hook.field} ({hook.path}): timed out after "
                               f"{hook.timeout:g}s and was killed") from None
    except OSError as exc:
        raise FailedPrecondition(f"{hook.field} ({hook.path}): {exc.strerror}") from None
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise FailedPrecondition(f"{hook.field} ({hook.path}): exited with status "
                                 f"{done.returncode}" + (f": {' | '.join(err)}" if err else ""))


@dataclass
class HookPoints:
    """One container's hooks, called by the backend at each lifecycle point."""

    reaper: Reaper
    spec: dict[str, Any]
    id: str
    bundle: str

    def _state(self, kind: str, pid: int) -> bytes:
        annotations = {str(k): str(v) for k, v in (self.spec.get("annotations") or {}).items()}
        return state_json(id=self.id, status=STATUS[kind], pid=pid, bundle=self.bundle,
                          annotations=annotations,
                          oci_version=str(self.spec.get("ociVersion", "1.0.2")))

    def __bool__(self) -> bool:
        return bool(self.spec.get("hooks"))

    async def created(self, pid: int) -> None:
        """prestart, createRuntime, createContainer: on the host, fatal."""
        for kind in ("prestart", "createRuntime", "createContainer"):
            await run(self.reaper, hooks_of(self.spec, kind), self._state(kind, pid),
                      container_id=self.id)

    async def start_container(self, pid: int) -> None:
        """startContainer: in the container's namespaces and root, fatal. nsenter(1) enters
        every namespace of the held init (-a) and its root and cwd (-r, -w), so the hook's
        path resolves in the container (config.md: "the path MUST resolve in the container
        namespace")."""
        nsenter = shutil.which("nsenter") or "/usr/bin/nsenter"  # the hook's env may lack PATH
        prefix = (nsenter, "-t", str(pid), "-a", "-r", "-w", "--")
        await run(self.reaper, hooks_of(self.spec, "startContainer"),
                  self._state("startContainer", pid), prefix=prefix, container_id=self.id)

    async def poststart(self, pid: int) -> None:
        await run(self.reaper, hooks_of(self.spec, "poststart"), self._state("poststart", pid),
                  fatal=False, container_id=self.id)

    async def poststop(self) -> None:
        await run(self.reaper, hooks_of(self.spec, "poststop"), self._state("poststop", 0),
                  fatal=False, container_id=self.id)
