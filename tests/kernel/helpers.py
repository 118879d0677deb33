"""Helpers for the tests that run inside the kernel test host."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

IP = "/usr/sbin/ip"  # full paths: a busybox shell would prefer its own `ip` applet
BRIDGE = "/usr/sbin/bridge"
BUSYBOX = "/bin/busybox"

#: A counter whose state lives in the shell's memory (i); /count only shows it. Restored by
#: CRIU, it goes on from its count; started again, it would write 1.
COUNTER_LOOP = """i=0
while :; do
    i=$((i+1))
    echo $i > /count.tmp
    mv /count.tmp /count
    sleep 0.2
done
"""
#: The same as a script for a plain LXC container: its stdio is pointed at the container's own
#: /dev/null first, so that the dump has no descriptor leading outside the container.
COUNTER_SCRIPT = "#!/bin/sh\nexec </dev/null >/dev/null 2>&1\n" + COUNTER_LOOP


def sh(*argv: str | os.PathLike[str], check: bool = True, timeout: float = 60,
       input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion shows its argv, rc, stdout and stderr.

    Output goes to temporary files, not pipes: commands that leave a daemon behind
    (`lxc-checkpoint -r` keeps the restored container's monitor) would hold a pipe open and
    make a pipe reader wait for EOF until the timeout.
    """
    cmd = [str(a) for a in argv]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        rc = subprocess.run(cmd, stdout=out, stderr=err, text=True, timeout=timeout,
                            input=input, stdin=None if input is not None else subprocess.DEVNULL,
                            check=False).returncode
        out.seek(0)
        err.seek(0)
        p = subprocess.CompletedProcess(cmd, rc, out.read(), err.read())
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} rc={p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def lxc_config(root: Path, name: str, init: Sequence[str], extra: Sequence[str] = ()) -> str:
    """A minimal LXC 5 app-container config (environment.md section 2's working set)."""
    lines = [
        f"lxc.uts.name = {name}",
        f"lxc.rootfs.path = dir:{root}",
        "lxc.net.0.type = empty",
        "lxc.mount.auto = proc:mixed sys:ro cgroup:mixed",
        "lxc.autodev = 1",
        "lxc.tty.max = 0",
        "lxc.pty.max = 16",
        "lxc.environment = PATH=/bin:/sbin:/usr/bin:/usr/sbin",
        f"lxc.init.cmd = {' '.join(init)}",
        *extra,
    ]
    return "\n".join(lines) + "\n"


def make_container(lxcpath: Path, name: str, init: Sequence[str],
                   extra: Sequence[str] = (), script: str | None = None) -> Path:
    """Create container ``name`` with a busybox rootfs; ``script`` becomes /run.sh in it."""
    from tests.harness.rootfs import populate_busybox_rootfs

    cdir = lxcpath / name
    root = cdir / "rootfs"
    root.mkdir(parents=True)
    populate_busybox_rootfs(root)
    if script is not None:
        (root / "run.sh").write_text(script)
        (root / "run.sh").chmod(0o755)
    (cdir / "config").write_text(lxc_config(root, name, init, extra))
    return cdir
