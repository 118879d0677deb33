"""How storage code runs the ``zfs``, ``zpool``, ``mount``, ``cp`` and ``criu`` tools.

Storage never starts processes itself: it is handed a :class:`CommandRunner`. In the shim daemon
that is the :class:`runtime.reaper.Reaper` (whose ``run`` has this exact shape), because every
child of the daemon must be reaped in one place (runtime/reaper.py). Outside the daemon (the
operator CLI, benchmarks, tests) :class:`ThreadRunner` runs ``subprocess.run`` in a worker
thread. Tests of pure logic pass a fake that records argv and returns canned output.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class CommandResult(Protocol):
    @property
    def returncode(self) -> int: ...

    @property
    def stdout(self) -> bytes: ...

    @property
    def stderr(self) -> bytes: ...


class CommandRunner(Protocol):
    async def run(self, argv: Sequence[str], *, input: bytes | None = None,
                  timeout: float | None = 30.0) -> CommandResult:
        """Run ``argv`` (no shell) to completion; raise TimeoutError after ``timeout``."""
        ...


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes


class ThreadRunner:
    """``subprocess.run`` in a thread. Not for the daemon (its Reaper owns every waitpid)."""

    async def run(self, argv: Sequence[str], *, input: bytes | None = None,
                  timeout: float | None = 30.0) -> Result:
        def call() -> Result:
            try:
                r = subprocess.run(list(argv), input=input, capture_output=True,
                                   timeout=timeout, stdin=None if input is not None
                                   else subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"{argv[0]}: no answer after {timeout} s") from None
            return Result(tuple(argv), r.returncode, r.stdout, r.stderr)

        return await asyncio.to_thread(call)
