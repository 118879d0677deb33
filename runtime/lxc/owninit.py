"""The in-container init (``lxcri-init``) of containers that may be checkpointed with CRIU.

With no init inside the container, ``lxc-execute`` runs LXC's init in-process: the container's
PID 1 then maps the host's ``/usr/bin/lxc-execute`` and liblxc, which lie outside the
container's mount namespace, and CRIU refuses the dump (``Can't lookup mount=… for fd=-3
path=/usr/bin/lxc-execute``, measured in the kernel test host). LXC 5.0.2 has no setting for
another init in execute mode (its ``lxc-execute`` carries no ``init.lxc`` lookup, measured
with ``strings``), so such containers run with ``lxc-start -F`` and ``lxc.init.cmd`` naming
this project's static init, bind-mounted with its per-container files at ``/dev/.lxcri``
(on the container's autodev tmpfs, so nothing is written into the root filesystem):

- ``init.lxc``: a copy of the static binary (built by ``make setup`` from
  ``runtime/lxc/init/lxcri-init.c``);
- ``argv``: the program's arguments, NUL-terminated (``lxc.init.cmd`` is split at spaces
  without honouring quotes, so the argv cannot go there);
- ``stdio``: which standard descriptors become the container's own ``/dev/null``;
- ``status``: the program's exit status, written by the init before it exits. ``lxc-start``
  always exits 0, and after a CRIU restore the init's parent is LXC's restore monitor, so this
  file is where the runtime learns the status.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from runtime import errdefs
from runtime.lxc.cleanup import OWN_INIT_DIR
from runtime.types import Stdio

#: Where the directory appears inside the container, and the init's path there.
MOUNT_POINT = "/dev/.lxcri"
INIT_PATH = MOUNT_POINT + "/init.lxc"
#: The static binary ``make setup`` builds.
BINARY = Path(__file__).with_name("init") / "lxcri-init"
#: The per-container directory, inside the backend's state directory.
DIR_NAME = OWN_INIT_DIR


def prepare(state_dir: Path, args: list[str], stdio: Stdio, binary: Path = BINARY) -> Path:
    """Create the per-container directory; returns its host path."""
    if not binary.is_file():
        raise errdefs.FailedPrecondition(
            f"{binary}: the in-container init for CRIU checkpoints is not built "
            "(run `make setup`, which compiles runtime/lxc/init/lxcri-init.c)")
    d = state_dir / DIR_NAME
    d.mkdir(mode=0o755, exist_ok=True)
    shutil.copy2(binary, d / "init.lxc")
    (d / "argv").write_bytes(b"".join(a.encode() + b"\0" for a in args))
    marks = "".join("n" if not path else "-" for path in (stdio.stdin, stdio.stdout,
                                                           stdio.stderr))
    (d / "stdio").write_text(marks)
    status = d / "status"
    status.write_text("")
    # The init runs as the spec's user, which may not be root.
    os.chmod(status, 0o666)
    return d


def exit_status(directory: Path) -> int | None:
    """The status the init recorded, or None if it wrote none (it was SIGKILLed)."""
    try:
        text = (directory / "status").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
