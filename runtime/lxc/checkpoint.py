"""The LXC backend's process checkpoint: ``lxc-checkpoint`` dumps a container with CRIU.

LXC hands CRIU the container's namespaces, mounts and cgroups, which a bare ``criu dump -t``
would not know. This is the backend half of :class:`runtime.backend.Checkpointable`; storage
only snapshots the filesystem around it (storage.provisioner). The restore is
:mod:`runtime.lxc.restore` (``lxc-checkpoint -r``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from runtime import criu_log, errdefs

#: CRIU dumps a whole process tree: seconds under QEMU without KVM (measured, restore.py).
DUMP_TIMEOUT = 300.0


class _Result(Protocol):
    @property
    def returncode(self) -> int: ...

    @property
    def stdout(self) -> bytes: ...

    @property
    def stderr(self) -> bytes: ...


class Runner(Protocol):
    """The daemon's Reaper, or storage's CommandRunner (the kernel tests use one)."""

    async def run(self, argv: Sequence[str], *, timeout: float | None = ...) -> _Result: ...


async def dump(runner: Runner, lxcpath: Path, name: str, images: Path, *, stop: bool,
               config_file: Path | None = None, tool: str = "lxc-checkpoint") -> None:
    """Dump container ``name`` into ``images``; ``stop`` stops it after the dump.
    ``config_file`` holds more CRIU options, which LXC cannot pass: CRIU reads the file
    ``CRIU_CONFIG_FILE`` names (criu(8), "Configuration files").

    The error names CRIU's own reason, from its log in ``images`` (``dump.log``)."""
    images.mkdir(parents=True, exist_ok=True)
    argv = [tool, "-P", str(lxcpath), "-n", name, "-D", str(images)]
    if config_file is not None:
        argv = ["env", f"CRIU_CONFIG_FILE={config_file}", *argv]
    if stop:
        argv.append("-s")
    try:
        r = await runner.run(argv, timeout=DUMP_TIMEOUT)
    except TimeoutError:
        raise errdefs.Internal(f"criu dump: no answer in {DUMP_TIMEOUT:.0f} s") from None
    if r.returncode != 0:
        try:
            text = (images / "dump.log").read_text(errors="replace")
        except OSError:
            text = (r.stdout + r.stderr).decode("utf-8", "replace")
        found = criu_log.errors(text)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        reason = "; ".join(found[:3]) if found else (lines[-1] if lines else "no output")
        raise errdefs.FailedPrecondition(f"criu dump failed: {reason}")
