"""Measure ``proxmox-lxcri`` against runc with the OCI runtime validation programs, and write
the comparison table that docs/oci-support.md ("OCI runtime-tools validation") shows.

    python -m tests.conformance.runtime_tools [--programs a,b] [--markdown F] [--json F]

What it does, offline (Debian's archive is the only package source here):

1. ``apt-get install`` golang-go and golang-github-opencontainers-runtime-tools-dev when they
   are missing (idempotent);
2. resolves the installed versions at run time (``dpkg-query``) and builds, into
   ``/var/cache/proxmox-lxcri/runtime-tools/<runtime-tools version>-go<go version>-<source
   hash>/``, the ``ocicheck`` bundle validator (``ocicheck/main.go``) against the Go sources
   in /usr/share/gocode (GOPATH mode, no module proxy);
3. reports whether the package ships runtime-tools' ``validation/`` programs and
   ``cmd/runtimetest``: Debian's package ships only the library (bookworm's does not), so the
   programs that run are the project's statement of those checks (``suite.py``);
4. runs every program with ``RUNTIME=runc`` and ``RUNTIME=proxmox-lxcri``, parses their TAP
   (``tap.py``) and writes per program the ok / not ok counts of both, then every check that
   passes on runc and fails here, with its documented cause from ``known.py`` or "NEW".

Exit status 1 when a check passes on runc and fails here without an entry in ``known.py``,
or when an entry of ``known.py`` is no longer a difference (stale).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conformance import known
from tests.conformance.suite import PROGRAMS
from tests.conformance.tap import Report, parse

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PACKAGES = ("golang-go", "golang-github-opencontainers-runtime-tools-dev")
RT_PACKAGE = "golang-github-opencontainers-runtime-tools-dev"
GOCODE = Path("/usr/share/gocode")
RT_SRC = GOCODE / "src/github.com/opencontainers/runtime-tools"
#: runtime-spec's JSON schema, from golang-github-opencontainers-specs-dev (a dependency).
SCHEMA = GOCODE / "src/github.com/opencontainers/runtime-spec/schema/config-schema.json"
CACHE = Path(os.environ.get("LXCRI_RUNTIME_TOOLS_CACHE",
                            "/var/cache/proxmox-lxcri/runtime-tools"))
#: One program's time limit; a hang is a failed program, not a hung run.
PROGRAM_TIMEOUT = 300


def installed_version(package: str) -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Version}", package],
                          capture_output=True, text=True)
    status, _, version = done.stdout.strip().partition(" ")
    return version.strip() if done.returncode == 0 and status.startswith("ii") else ""


def ensure_packages() -> None:
    missing = [p for p in PACKAGES if not installed_version(p)]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(install, env=env, check=True)


def upstream_suite_shipped() -> bool:
    """Whether the installed package has runtime-tools' own programs and in-container tester."""
    return (RT_SRC / "validation").is_dir() and (RT_SRC / "cmd/runtimetest").is_dir()


def build_ocicheck() -> Path:
    """``ocicheck`` built once per runtime-tools version, Go version and source."""
    go_version = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True,
                                check=True).stdout.strip()
    source = (HERE / "ocicheck/main.go").read_bytes()
    key = f"{installed_version(RT_PACKAGE)}-{go_version}-{hashlib.sha256(source).hexdigest()[:12]}"
    out = CACHE / key.replace("/", "_").replace(":", "_") / "ocicheck"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ocicheck-gopath-") as gopath:
        pkg = Path(gopath, "src/ocicheck")
        pkg.mkdir(parents=True)
        (pkg / "main.go").write_bytes(source)
        # GOPATH mode: Debian's -dev packages are a GOPATH tree (/usr/share/gocode/src);
        # no go.mod, so no module proxy is ever asked.
        env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{gopath}:{GOCODE}",
               "GOCACHE": str(CACHE / "gocache"), "CGO_ENABLED": "0", "GOFLAGS": ""}
        subprocess.run(["go", "build", "-o", str(out) + ".tmp", "."], cwd=pkg, env=env,
                       check=True)
    os.replace(str(out) + ".tmp", out)
    return out


def ours_default() -> str:
    stamp = REPO / ".stamps/bin/proxmox-lxcri"
    return str(stamp) if stamp.exists() else (shutil.which("proxmox-lxcri") or "proxmox-lxcri")


def run_program(name: str, runtime: str, ocicheck: str = "") -> Report:
    env = {**os.environ, "RUNTIME": runtime, "OCICHECK": ocicheck,
           "OCICHECK_SCHEMA": str(SCHEMA),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        done = subprocess.run([sys.executable, "-m", "tests.conformance.suite", name],
                              capture_output=True, text=True, env=env, cwd=REPO,
                              timeout=PROGRAM_TIMEOUT)
        text = done.stdout
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    report = parse(text)
    if not report.complete:  # crashed or timed out: one failed check says so
        report = parse(text + f"\nnot ok {len(report.results) + 1} - {name} completed\n")
    return report


@dataclass
class Comparison:
    reference: dict[str, Report]
    ours: dict[str, Report]

    def differences(self) -> list[tuple[str, str]]:
        """(program, check) that pass on the reference and do not pass here."""
        return [(p, c) for p, ref in self.reference.items() for c in ref.passed
                if c not in self.ours[p].passed]

    def stale(self) -> list[tuple[str, str]]:
        """Entries of ``known.py`` for the programs that ran that no longer fail here (or no
        longer pass on the reference): the list must lose them."""
        return [k for k in sorted(known.KNOWN) if k[0] in self.ours
                and (k[1] in self.ours[k[0]].passed
                     or k[1] not in self.reference[k[0]].passed)]

    def ours_only(self) -> list[tuple[str, str]]:
        return [(p, c) for p, mine in self.ours.items() for c in mine.passed
                if c not in self.reference[p].passed]

    def markdown(self, ref_name: str = "runc") -> str:
        rows = [f"| Program | {ref_name} ok | {ref_name} not ok | ours ok | ours not ok |",
                "|---|---|---|---|---|"]
        for p in self.reference:
            r, o = self.reference[p], self.ours[p]
            rows.append(f"| `{p}` | {len(r.passed)} | {len(r.failed)} | {len(o.passed)} "
                        f"| {len(o.failed)} |")
        def tot(reps: dict[str, Report], attr: str) -> int:
            return sum(len(getattr(x, attr)) for x in reps.values())
        rows.append(f"| **total** | {tot(self.reference, 'passed')} "
                    f"| {tot(self.reference, 'failed')} | {tot(self.ours, 'passed')} "
                    f"| {tot(self.ours, 'failed')} |")
        lines = ["\n".join(rows), "", f"Passes on {ref_name}, fails on ours:", ""]
        for p, c in self.differences():
            lines.append(f"- `{p}`: {c} — {known.KNOWN.get((p, c), 'NEW: not yet explained')}")
        lines += ["", f"Passes on ours, fails on {ref_name}:", ""]
        lines += [f"- `{p}`: {c}" for p, c in self.ours_only()] or ["- none"]
        if self.stale():
            lines += ["", "Listed in tests/conformance/known.py but no longer a difference "
                      "(remove them):", ""]
            lines += [f"- `{p}`: {c}" for p, c in self.stale()]
        return "\n".join(lines) + "\n"


def compare(programs: list[str], reference: str, ours: str, ocicheck: str = "",
            progress: bool = False) -> Comparison:
    result = Comparison({}, {})
    for name in programs:
        for runtime, into in ((reference, result.reference), (ours, result.ours)):
            began = time.monotonic()
            into[name] = run_program(name, runtime, ocicheck)
            if progress:
                rep = into[name]
                print(f"{name:32} {Path(runtime).name:16} ok={len(rep.passed):3} "
                      f"not ok={len(rep.failed):3} {time.monotonic() - began:6.1f} s",
                      file=sys.stderr, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--programs", default=",".join(PROGRAMS),
                    help="comma-separated program names (default: all)")
    ap.add_argument("--reference", default=shutil.which("runc") or "runc")
    ap.add_argument("--ours", default=ours_default())
    ap.add_argument("--markdown", type=Path, help="write the table here")
    ap.add_argument("--json", type=Path, help="write every check's outcome here")
    ap.add_argument("--no-install", action="store_true", help="skip apt-get and the Go build")
    args = ap.parse_args(argv)
    programs = [p for p in args.programs.split(",") if p]
    unknown = [p for p in programs if p not in PROGRAMS]
    if unknown:
        ap.error(f"unknown programs: {', '.join(unknown)}")
    ocicheck = ""
    if not args.no_install:
        ensure_packages()
        ocicheck = str(build_ocicheck())
        version = installed_version(RT_PACKAGE)
        print(f"runtime-tools {version}: validation/ and cmd/runtimetest "
              f"{'shipped' if upstream_suite_shipped() else 'not shipped (library only)'}; "
              f"bundles checked by {ocicheck}", file=sys.stderr)
    result = compare(programs, args.reference, args.ours, ocicheck, progress=True)
    table = (f"Measured {datetime.date.today().isoformat()}: {Path(args.reference).name} vs "
             f"{Path(args.ours).name}, runtime-tools {installed_version(RT_PACKAGE) or '?'}.\n\n"
             + result.markdown(Path(args.reference).name))
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps({
            side: {p: {"passed": r.passed, "failed": r.failed} for p, r in reps.items()}
            for side, reps in (("reference", result.reference), ("ours", result.ours))},
            indent=1))
    new = [d for d in result.differences() if d not in known.KNOWN]
    return 1 if new or result.stale() else 0


if __name__ == "__main__":
    sys.exit(main())
