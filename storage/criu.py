"""CRIU, for the process half of a checkpoint: detection, dump and restore.

Detection is ``criu check``: on this project's dev host CRIU 3.17 fails it
(``vdso: Unexpected rt vDSO area bounds``, environment.md section 4); in the kernel test host it
passes. A checkpoint that asks for CRIU where the check fails raises FailedPrecondition naming
CRIU's own reason, so the user learns why, and the filesystem checkpoint stays available.

Dump and restore work on a process tree (``criu dump -t PID``); the images go to a directory
recorded on the checkpoint's snapshot.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from runtime import criu_log
from runtime.errdefs import FailedPrecondition, Internal
from storage.runner import CommandRunner

CHECK_TIMEOUT = 30.0
DUMP_TIMEOUT = 300.0

@dataclass(frozen=True)
class CriuStatus:
    works: bool
    #: CRIU's own words when it does not work (its first error lines), "" when it does.
    reason: str
    version: str = ""


def reason_from_output(text: str, limit: int = 3) -> str:
    """CRIU's error messages from its output, most specific (first) first; else its last
    line."""
    errors = criu_log.errors(text)
    if errors:
        return "; ".join(errors[:limit])
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


_cache: dict[str, CriuStatus] = {}
#: The result of ``criu check`` for this boot and this CRIU binary, shared by the shim daemons:
#: each pod has its own daemon, and the check would otherwise run once in each.
CACHE_FILE = Path("/run/proxmox-lxcri/criu-check.json")


async def check(runner: CommandRunner, criu: str = "criu", *, cached: bool = True,
                cache_file: Path = CACHE_FILE) -> CriuStatus:
    """Whether CRIU works on this kernel (``criu check``), and if not, CRIU's reason."""
    if cached and criu in _cache:
        return _cache[criu]
    path = shutil.which(criu)
    if path is None:
        status = CriuStatus(False, f"{criu}: not installed")
    else:
        key = _cache_key(path)
        status_or_none = _load(cache_file, key) if cached else None
        if status_or_none is not None:
            status = status_or_none
        else:
            try:
                r = await runner.run([criu, "check"], timeout=CHECK_TIMEOUT)
            except TimeoutError:
                return CriuStatus(False, f"criu check: no answer in {CHECK_TIMEOUT:.0f} s")
            out = (r.stdout + r.stderr).decode("utf-8", "replace")
            status = (CriuStatus(True, "") if r.returncode == 0
                      else CriuStatus(False, reason_from_output(out)))
            if cached:
                _store(cache_file, key, status)
    _cache[criu] = status
    return status


def _cache_key(binary: str) -> str:
    """This boot (a kernel or module change needs a reboot) and this CRIU binary."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        st = os.stat(binary)
    except OSError:
        return ""
    return f"{boot}:{binary}:{st.st_size}:{st.st_mtime_ns}"


def _load(cache_file: Path, key: str) -> CriuStatus | None:
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return None
    if not key or not isinstance(data, dict) or data.get("key") != key:
        return None
    return CriuStatus(bool(data.get("works")), str(data.get("reason", "")))


def _store(cache_file: Path, key: str, status: CriuStatus) -> None:
    if not key:
        return
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "works": status.works, "reason": status.reason}))
        tmp.replace(cache_file)
    except OSError:
        pass  # only a cache


def unavailable(status: CriuStatus) -> FailedPrecondition:
    return FailedPrecondition(f"CRIU checkpoint not possible on this host: {status.reason} "
                              "(criu check failed; a filesystem-only checkpoint is still "
                              "possible)")


async def dump(runner: CommandRunner, pid: int, images: Path, *, leave_running: bool,
               criu: str = "criu") -> None:
    """Dump the process tree rooted at ``pid`` into ``images``."""
    images.mkdir(parents=True, exist_ok=True)
    argv = [criu, "dump", "-t", str(pid), "-D", str(images), "-o", "dump.log", "-v2",
            "--shell-job", "--tcp-established", "--ext-unix-sk", "--file-locks"]
    if leave_running:
        argv.append("--leave-running")
    await _run(runner, argv, images / "dump.log", "dump")


async def restore(runner: CommandRunner, images: Path, *, criu: str = "criu") -> int:
    """Restore the tree dumped in ``images`` (detached); returns the restored root's PID."""
    pidfile = images / "restore.pid"
    pidfile.unlink(missing_ok=True)
    argv = [criu, "restore", "-D", str(images), "-o", "restore.log", "-v2", "-d",
            "--shell-job", "--tcp-established", "--ext-unix-sk", "--file-locks",
            "--pidfile", str(pidfile)]
    await _run(runner, argv, images / "restore.log", "restore")
    return int(pidfile.read_text().strip())


async def _run(runner: CommandRunner, argv: list[str], log: Path, what: str) -> None:
    try:
        r = await runner.run(argv, timeout=DUMP_TIMEOUT)
    except TimeoutError:
        raise Internal(f"criu {what}: no answer in {DUMP_TIMEOUT:.0f} s") from None
    if r.returncode != 0:
        try:
            text = log.read_text(errors="replace")
        except OSError:
            text = (r.stdout + r.stderr).decode("utf-8", "replace")
        raise FailedPrecondition(f"criu {what} failed: {reason_from_output(text)}")
