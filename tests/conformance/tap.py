"""TAP 13 (testanything.org), the output of runtime-tools' validation programs and of ours:
a writer for the programs and a parser for the runner.

Only what the runner compares is parsed: ``ok N - desc`` / ``not ok N - desc``, with the
``# SKIP``/``# TODO`` directives (a skipped check counts as neither passed nor failed), and
the plan ``1..N``, whose absence or mismatch marks the program as crashed.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import TextIO

_LINE = re.compile(r"^(not ok|ok)\b\s*(\d+)?\s*(?:-\s*)?(.*)$")
_PLAN = re.compile(r"^1\.\.(\d+)")


@dataclass
class Result:
    ok: bool
    description: str
    skip: bool = False
    diagnostic: str = ""


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    planned: int | None = None

    @property
    def passed(self) -> list[str]:
        return [r.description for r in self.results if r.ok and not r.skip]

    @property
    def failed(self) -> list[str]:
        return [r.description for r in self.results if not r.ok and not r.skip]

    @property
    def complete(self) -> bool:
        return self.planned is not None and self.planned == len(self.results)


def parse(text: str) -> Report:
    report = Report()
    for line in text.splitlines():
        if m := _PLAN.match(line):
            report.planned = int(m.group(1))
        elif m := _LINE.match(line):
            desc, _, directive = m.group(3).partition(" # ")
            report.results.append(Result(ok=m.group(1) == "ok", description=desc.strip(),
                                         skip=directive.upper().startswith("SKIP")))
        elif line.startswith("#") and report.results:
            report.results[-1].diagnostic += line[1:].strip() + "\n"
    return report


class Writer:
    """Writes one program's TAP stream; the plan goes last (TAP allows a trailing plan)."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.count = 0
        print("TAP version 13", file=out, flush=True)

    def check(self, ok: bool, description: str, diagnostic: str = "") -> bool:
        self.count += 1
        print(f"{'ok' if ok else 'not ok'} {self.count} - {description}", file=self.out)
        for line in diagnostic.strip().splitlines() if not ok else []:
            print(f"# {line}", file=self.out)
        self.out.flush()
        return ok

    def skip(self, description: str, reason: str) -> None:
        self.count += 1
        print(f"ok {self.count} - {description} # SKIP {reason}", file=self.out, flush=True)

    def diag(self, text: str) -> None:
        for line in text.strip().splitlines():
            print(f"# {line}", file=self.out, flush=True)

    def done(self) -> None:
        print(f"1..{self.count}", file=self.out, flush=True)
