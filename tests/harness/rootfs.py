"""A minimal busybox root filesystem from Debian's busybox-static, for tests and the demo."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

BUSYBOX = Path("/bin/busybox")

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def applets() -> list[str]:
    """Full paths of busybox's applets (``busybox --list-full``), e.g. ``bin/sh``."""
    out = subprocess.run([str(BUSYBOX), "--list-full"], check=True, capture_output=True,
                         text=True).stdout
    return sorted({line.strip() for line in out.splitlines() if line.strip()})


def populate_busybox_rootfs(root: Path) -> None:
    """Fill ``root`` with busybox, its applet symlinks, /etc/passwd and /etc/group."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
              "run", "var"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    for applet in applets():
        link = root / applet
        if applet == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)


@contextlib.contextmanager
def temporary_busybox_rootfs(prefix: str) -> Iterator[Path]:
    """A busybox root filesystem in a new folder (0755, so that a container's mapped or
    unprivileged users can walk it), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        root.chmod(0o755)
        populate_busybox_rootfs(root)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
