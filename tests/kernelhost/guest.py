"""Guest side of a batch: run the job's pytest node ids inside the VM.

Started by guest_stage2.sh as ``<project python> -m tests.kernelhost.guest <job.json>`` with the
checkout as the working directory. Each test report is serialised (pytest's own
``pytest_report_to_serializable``, as pytest-xdist does) into ``results.jsonl`` on the writable
9p export, so the host can replay it as the host-side result of the same item.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# Set in the guest only: the plugin then records reports instead of dispatching to a VM, and
# tests can tell they run on the kernel test host.
IN_GUEST_ENV = "LXCRI_IN_KERNEL_HOST"
RESULTS_ENV = "LXCRI_KERNEL_RESULTS"
# The Debian codename of the guest (bookworm: the `kernel` flavour, trixie: `pve9`).
FLAVOUR_ENV = "LXCRI_KERNEL_FLAVOUR"


def main(argv: list[str]) -> int:
    job_path = Path(argv[1])
    job = json.loads(job_path.read_text())
    os.environ[IN_GUEST_ENV] = "1"
    os.environ[RESULTS_ENV] = str(job_path.parent / "results.jsonl")
    os.environ.update(job.get("env", {}))
    args = ["-p", "tests.kernelhost.plugin", "-p", "no:cacheprovider", *job["args"], "--",
            *job["nodeids"]]
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
