"""A scripted command runner for the storage unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from storage.runner import Result


@dataclass
class FakeRunner:
    """Answers each argv with the first matching script entry (argv prefix → result list,
    consumed in order; the last one repeats), and records every argv."""

    script: list[tuple[tuple[str, ...], list[tuple[int, str, str]]]] = field(
        default_factory=list)
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def on(self, *prefix: str, rc: int = 0, out: str = "", err: str = "") -> FakeRunner:
        for p, results in self.script:
            if p == prefix:
                results.append((rc, out, err))
                return self
        self.script.append((prefix, [(rc, out, err)]))
        return self

    async def run(self, argv: Sequence[str], *, input: bytes | None = None,
                  timeout: float | None = 30.0) -> Result:
        argv = tuple(argv)
        self.calls.append(argv)
        for prefix, results in self.script:
            if argv[:len(prefix)] == prefix:
                rc, out, err = results.pop(0) if len(results) > 1 else results[0]
                return Result(argv, rc, out.encode(), err.encode())
        return Result(argv, 0, b"", b"")
