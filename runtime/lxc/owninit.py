"""The container's first process (``lxcri-init``): it applies the process settings and
execve()s the program, which is then PID 1 of the container (runc's behaviour).

Every container is started with ``lxcri-start`` (LXC's start mode, :mod:`runtime.lxc.backend`)
and ``lxc.init.cmd`` naming this project's static init, bind-mounted with its per-container
files at ``/dev/.lxcri`` (on the container's autodev tmpfs, so nothing is written into the
root filesystem). What the init does and in which order is in
``runtime/lxc/init/lxcri-init.c``; its files:

- ``init.lxc``: a copy of the static binary (built by ``make setup``);
- ``argv``: the program's arguments, NUL-terminated (``lxc.init.cmd`` is split at spaces
  without honouring quotes, so the argv cannot go there);
- ``process``: user, groups, rlimits, capabilities, no_new_privs, whether to load the seccomp
  filter (:func:`runtime.lxc.security.process_directives`);
- ``seccomp``: the compiled filter (:mod:`runtime.lxc.seccomp`);
- ``stdio``: which standard descriptors become the container's own ``/dev/null`` (the host's
  would be a file CRIU cannot dump);
- ``exec``: a FIFO whose write end the init holds with O_CLOEXEC: the runtime sees its end
  when the program has been exec'd (poststart hooks run then);
- ``gate-ready``, ``gate-start``: the gate's FIFOs (:mod:`runtime.lxc.gate`), made by the
  backend: the init reports its set-up there and waits for Start.

An exec gets a directory of its own inside (``x-…``), with the same files, and runs the same
init through ``lxc-attach`` (:mod:`runtime.lxc.exec`).

Why a static init bind-mounted in, not LXC's: ``lxc-execute`` runs LXC's init in-process, as
PID 1 with the program as PID 2; that init signalled every process on SIGTERM, froze forking
and SIGKILLed all a second later, and its executable lies outside the container's mount
namespace, so CRIU could not dump it (``Can't lookup mount=… for fd=-3
path=/usr/bin/lxc-execute``, measured in the kernel test host).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from runtime import errdefs
from runtime.lxc.cleanup import OWN_INIT_DIR
from runtime.types import Stdio

#: Where the directory appears inside the container, and the init's path there.
MOUNT_POINT = "/dev/.lxcri"
INIT_PATH = MOUNT_POINT + "/init.lxc"
#: The static binary ``make setup`` builds.
BINARY = Path(__file__).with_name("init") / "lxcri-init"
#: The Proxmox backend's init (runtime/proxmox/initdir.py): a forking PID 1 that records the
#: program's status, since Proxmox's own lxc-start reports none (lxcri-pve-init.c).
PVE_BINARY = Path(__file__).with_name("init") / "lxcri-pve-init"
#: The per-container directory, inside the backend's state directory.
DIR_NAME = OWN_INIT_DIR
#: The FIFO that tells the runtime the program has been exec'd.
EXEC_FIFO = "exec"


def root_owner(spec: dict[str, Any]) -> tuple[int, int] | None:
    """The host uid and gid of the container's root with a user namespace (None without
    one, or when root is not mapped): the owner of the FIFOs the init opens, which are 0600
    (a mapped root has no DAC override on a file of an unmapped owner, capabilities(7))."""
    linux = spec.get("linux") or {}
    if not any(isinstance(n, dict) and n.get("type") == "user"
               for n in linux.get("namespaces") or []):
        return None
    ids = []
    for key in ("uidMappings", "gidMappings"):
        for m in linux.get(key) or []:
            start, host, size = m.get("containerID"), m.get("hostID"), m.get("size")
            if all(isinstance(v, int) for v in (start, host, size)) and start <= 0 < start + size:
                ids.append(host - start)
                break
        else:
            return None
    return ids[0], ids[1]


def prepare(state_dir: Path, args: list[str], stdio: Stdio, directives: str,
            seccomp: bytes | None = None, binary: Path = BINARY, *,
            inherited: bool = False, shared_dir: Path | None = None,
            owner: tuple[int, int] | None = None) -> Path:
    """Create the per-container directory; returns its host path. ``inherited``: the
    container has the caller's stdio (the CLI's pass-through), kept as it is. ``shared_dir``:
    where one copy of the binary per build is kept for hard links (else a copy each).
    ``owner``: :func:`root_owner`, who owns the FIFOs."""
    if not binary.is_file():
        raise errdefs.FailedPrecondition(
            f"{binary}: the container init is not built "
            "(run `make setup`, which compiles runtime/lxc/init/lxcri-init.c)")
    d = state_dir / DIR_NAME
    d.mkdir(mode=0o755, exist_ok=True)
    if shared_dir is None:
        shutil.copy2(binary, d / "init.lxc")
    else:
        _place_binary(binary, shared_dir, d / "init.lxc")
    marks = "".join("n" if not path and not inherited else "-"
                    for path in (stdio.stdin, stdio.stdout, stdio.stderr))
    _write_files(d, args, directives, seccomp, marks)
    fifo = d / EXEC_FIFO
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo, 0o600)
    if owner is not None:
        os.chown(fifo, *owner)
    return d


def _place_binary(binary: Path, shared_dir: Path, target: Path) -> None:
    """A hard link to one shared copy of the binary per build (on the state directories'
    filesystem): a copy per container cost ~0.8 MB of tmpfs each."""
    st = binary.stat()
    shared = shared_dir / f"lxcri-init-{st.st_size}-{st.st_mtime_ns}"
    try:
        shared_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        if not shared.exists():
            tmp = shared.with_name(f"{shared.name}.{os.getpid()}.tmp")
            shutil.copy2(binary, tmp)
            os.replace(tmp, shared)  # atomic: concurrent creates see a whole file or none
        os.link(shared, target)
    except OSError:
        shutil.copy2(binary, target)  # another filesystem, or a read-only parent


def _write_files(d: Path, args: list[str], directives: str, seccomp: bytes | None,
                 marks: str) -> None:
    (d / "argv").write_bytes(b"".join(a.encode() + b"\0" for a in args))
    (d / "process").write_text(directives)
    (d / "stdio").write_text(marks)
    if seccomp is not None:
        (d / "seccomp").write_bytes(seccomp)
    # The init reads them before its uid change, but in a user namespace its root is not
    # the host's root that owns them.
    for name in ("argv", "process", "stdio", "seccomp"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(d / name, 0o644)


def prepare_exec(init_dir: Path, args: list[str], directives: str) -> tuple[Path, str]:
    """A directory for one exec inside the container's init directory: (its host path, its
    path inside the container). The container's seccomp filter, if any, applies to it too."""
    d = Path(tempfile.mkdtemp(prefix="x-", dir=init_dir))
    os.chmod(d, 0o755)
    has_filter = (init_dir / "seccomp").is_file()
    _write_files(d, args, directives, None, "---")
    if has_filter:
        os.link(init_dir / "seccomp", d / "seccomp")
    return d, f"{MOUNT_POINT}/{d.name}"


def container_directive(init_dir: Path, keyword: str) -> str | None:
    """The container's own ``keyword`` line of its process file (e.g. "caps ..."), or None."""
    try:
        text = (init_dir / "process").read_text()
    except OSError:
        return None
    return next((ln for ln in text.splitlines() if ln.split(" ", 1)[0] == keyword), None)


def open_exec_fifo(init_dir: Path) -> int:
    """The read end of the init's ``exec`` FIFO (non-blocking, never blocks to open): it reads
    EOF once the init has exec'd the program (or died)."""
    return os.open(init_dir / EXEC_FIFO, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
