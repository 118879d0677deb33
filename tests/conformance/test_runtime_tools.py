"""What passes on runc passes on ``proxmox-lxcri``: a representative subset of the OCI
validation programs (``suite.py``) run against both runtimes, through this checkout's CLI.

Every difference must be listed, with its cause, in ``known.py``; each listed difference of
the subset is asserted to still pass on runc and to still fail here (``xfail(strict=True)``),
so a fix or a regression cannot leave the list stale silently. The whole suite, with
runtime-tools' validator, is ``python -m tests.conformance.runtime_tools``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.known import KNOWN
from tests.conformance.runtime_tools import REPO, Comparison, compare

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (containers, mount(2))"),
    pytest.mark.skipif(shutil.which("lxc-execute") is None, reason="lxc-execute not installed"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc (the reference) not installed"),
]

#: runtime.md's operations, the default config seen from inside, users and capabilities,
#: masked paths, namespaces by path, the pid file, the hooks and PID-1 signal semantics:
#: about 35 s for both runtimes here.
SUBSET = ("default", "lifecycle", "process_user", "process_capabilities", "linux_masked_paths",
          "linux_ns_path", "pidfile", "hooks", "kill_pid1")
KNOWN_IN_SUBSET = sorted(k for k in KNOWN if k[0] in SUBSET)


@pytest.fixture(scope="module")
def comparison() -> Iterator[Comparison]:
    # This checkout's OCI CLI as a runtime binary, whatever is installed or on PATH.
    with tempfile.TemporaryDirectory(prefix="ocival-cli-") as d:
        launcher = Path(d, "proxmox-lxcri")
        code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                "from shim.operator_cli import main; sys.argv[0] = 'proxmox-lxcri'; main()")
        launcher.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c "
                            f"{shlex.quote(code)} \"$@\"\n")
        launcher.chmod(0o755)
        runc = shutil.which("runc")
        assert runc is not None
        yield compare(list(SUBSET), runc, str(launcher), progress=True)


def test_every_program_ran_to_its_plan_on_both(comparison: Comparison) -> None:
    for side in (comparison.reference, comparison.ours):
        for program in SUBSET:
            report = side[program]
            assert report.complete and report.passed, (program, report)


def test_what_passes_on_runc_passes_here_or_is_a_known_difference(
        comparison: Comparison) -> None:
    new = [d for d in comparison.differences() if d not in KNOWN]
    assert new == [], "passes on runc, fails here, not in tests/conformance/known.py"


def test_known_differences_still_pass_on_runc(comparison: Comparison) -> None:
    assert [k for k in KNOWN_IN_SUBSET
            if k[1] not in comparison.reference[k[0]].passed] == []


@pytest.mark.parametrize("key", [
    pytest.param(k, id=f"{k[0]}: {k[1]}", marks=pytest.mark.xfail(strict=True, reason=KNOWN[k]))
    for k in KNOWN_IN_SUBSET])
def test_known_difference(comparison: Comparison, key: tuple[str, str]) -> None:
    program, check = key
    assert check in comparison.ours[program].passed
