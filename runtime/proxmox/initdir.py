"""The project's init (``lxcri-init``) as the CT's entrypoint, with the shim's directory.

Proxmox starts a CT through ``systemctl start pve-container@<vmid>``: ``lxc-start -F`` with
stdout to /dev/null and no exit status anywhere (proxmox-api.md §6.2). So the program's stdio,
its exit status and the created state's hold cannot come from Proxmox's process; they come
through a directory the shim owns (``<state dir>/pve-init``), bind-mounted at ``/dev/.lxcri``
in the CT by a raw ``lxc.mount.entry`` key (written into the CT's config file as root on the
node: raw keys cannot be set through the API, and bind mount points need a root@pam ticket;
proxmox-api.md §0 item 5, §6.1):

- ``pve-init.lxc``: the static PID 1 (lxcri-pve-init.c), the CT's ``entrypoint`` (an API
  option since PVE 9.1);
- ``init.lxc``, ``process``, ``seccomp``: the LXC backend's own init (lxcri-init.c, the same
  binary, runtime/lxc/owninit.py) with its files: PID 1's child execs it, and it applies the
  spec's user, groups, cwd, rlimits, capabilities, no_new_privs and seccomp filter in runc's
  order and execs the program; an exec runs it through ``lxc-attach`` (runtime/lxc/exec.py);
- ``argv``: the program's argv (NUL-terminated); ``stdio``: one mark per descriptor, ``f``
  for a stream (the init opens ``/dev/.lxcri/fd<N>``), ``n`` for none (/dev/null);
- ``fd1``, ``fd2``: containerd's stdout and stderr FIFOs, hard links to them (same
  filesystem), else each bind-mounted there by its own mount entry (inside the CT's mount
  namespace only), and given to the program's user: the LXC backend hands the same FIFOs to
  the same process, so the access is the same;
- ``fd0``: a FIFO of the shim's, which it feeds from containerd's stdin FIFO (as the LXC
  backend feeds a pipe, runtime/stdio.py): containerd's writer may come and go (``ctr`` closes
  it at its stdin's EOF) before the program opens its end, which would then wait forever;
- ``gate``: a FIFO the shim holds open; PID 1 waits for ``go`` before running the program
  (OCI created → running), and EOF (the shim died) or ``abort`` ends it with status 1;
- ``status``: the program's exit status, written by the init before it exits.

With ``process.terminal`` the shim's pty slave is bind-mounted as ``fd0``..``fd2`` instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from runtime import errdefs
from runtime.lxc import owninit
from runtime.lxc.owninit import PVE_BINARY as BINARY
from runtime.proxmox.ctconfig import mount_path
from runtime.types import Stdio

DIR_NAME = "pve-init"
MOUNT_POINT = "dev/.lxcri"
ENTRYPOINT = "/dev/.lxcri/pve-init.lxc"


def prepare(state_dir: Path, args: list[str], stdio: Stdio, *, host_uid: int, host_gid: int,
            tty: str | None = None, binary: Path = BINARY, directives: str = "",
            seccomp: bytes | None = None,
            apply_binary: Path = owninit.BINARY) -> tuple[Path, list[tuple[str, str]]]:
    """The directory (host path) and the raw LXC keys that mount it and the FIFOs; with
    ``tty`` (the slave of a pty the shim holds, for ``process.terminal``) that pty is the
    program's stdin, stdout and stderr instead, and its controlling terminal (the init makes
    a tty stdin its controlling terminal)."""
    if not binary.is_file():
        raise errdefs.FailedPrecondition(f"{binary}: the in-container init is not built "
                                         "(run `make setup`)")
    d = state_dir / DIR_NAME
    d.mkdir(mode=0o755, exist_ok=True)
    os.chmod(d, 0o755)
    if not apply_binary.is_file():
        raise errdefs.FailedPrecondition(f"{apply_binary}: the in-container init is not built "
                                         "(run `make setup`)")
    shutil.copy2(binary, d / "pve-init.lxc")
    shutil.copy2(apply_binary, d / "init.lxc")
    (d / "argv").write_bytes(b"".join(a.encode() + b"\0" for a in args))
    (d / "process").write_text(directives)
    if seccomp is not None:
        (d / "seccomp").write_bytes(seccomp)
    for name in ("argv", "process", "seccomp"):
        # Read by the CT's root, which in an unprivileged CT is not the host's root.
        if (d / name).exists():
            os.chmod(d / name, 0o644)
    raw = [("lxc.mount.entry", f"{mount_path('state dir', str(d))} {MOUNT_POINT} none "
                               "bind,create=dir 0 0")]
    marks = ""
    if tty is not None:
        mount_path("terminal", tty)
        os.chown(tty, host_uid, host_gid)
        for n in range(3):
            (d / f"fd{n}").touch()
            raw.append(("lxc.mount.entry",
                        f"{tty} {MOUNT_POINT}/fd{n} none bind,create=file 0 0"))
        stdio = Stdio()
        marks = "fff"
    for n, path in enumerate((stdio.stdin, stdio.stdout, stdio.stderr) if tty is None
                             else ()):
        if not path:
            marks += "n"
            continue
        if "://" in path:
            raise errdefs.NotImplementedErr(f"stdio {path!r}: the Proxmox backend takes FIFO "
                                            "paths only (no file:// or binary:// logging)")
        mount_path(f"stdio {n}", path)
        if not os.path.exists(path):
            raise errdefs.NotFound(f"stdio {n}: {path}: no such file")
        if n == 0:
            fifo = d / "fd0"
            if not fifo.exists():
                os.mkfifo(fifo, 0o600)
            os.chown(fifo, host_uid, host_gid)
            marks += "f"
            continue
        # The program's user owns it, inside the CT (unprivileged: shifted ids).
        os.chown(path, host_uid, host_gid)
        target = d / f"fd{n}"
        target.unlink(missing_ok=True)
        try:
            # A hard link of containerd's FIFO into this directory (the same inode; /run
            # holds both on a node): no mount entry, and an unprivileged CT's mapped root,
            # which makes LXC's mounts, need not reach containerd's 0700 FIFO directory.
            os.link(path, target)
        except OSError:
            target.touch()  # another filesystem: bind-mounted onto this file instead
            raw.append(("lxc.mount.entry",
                        f"{path} {MOUNT_POINT}/fd{n} none bind,create=file 0 0"))
        marks += "f"
    (d / "stdio").write_text(marks)
    status = d / "status"
    status.write_text("")
    os.chmod(status, 0o666)
    gate = d / "gate"
    if not gate.exists():
        os.mkfifo(gate, 0o644)
    return d, raw


def open_stdin(directory: Path, client: str) -> tuple[int, int]:
    """(containerd's stdin FIFO, the shim's end of ``fd0``), both non-blocking; ``fd0`` is
    opened O_RDWR so that neither open waits (fifo(7)) and the program reads EOF once the
    copy ends and closes it."""
    src = os.open(client, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        sink = os.open(directory / "fd0", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except BaseException:
        os.close(src)
        raise
    return src, sink


def open_gate(directory: Path) -> int:
    """The shim's end of the gate: O_RDWR, so it never blocks (fifo(7)); held until start."""
    return os.open(directory / "gate", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)


def exit_status(directory: Path) -> int | None:
    try:
        text = (directory / "status").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
