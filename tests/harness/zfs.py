"""A zfs-fuse daemon and throw-away pools on sparse files, for tests and benchmarks.

Whatever ZFS the machine provides: where OpenZFS's kernel module is loaded (``/dev/zfs``: the
kernel test hosts, a Proxmox VE node) the pools are made with its ``zpool`` and no daemon is
needed; elsewhere (the Debian 12 development host) with zfs-fuse's. The ``zfs``/``zpool``
commands are the same for what is used here (environment.md section 3).

Only one zfs-fuse daemon can run per machine: the ``zfs``/``zpool`` tools talk to it over the
hard-coded socket ``/var/run/zfs/zfs_socket`` (environment.md section 3). So :class:`ZfsFuse`
reuses a running daemon and starts one only when none answers; it stops the daemon at the end
only if it started it, by PID (SIGTERM; the daemon takes about 4.4 s to exit).

Each :class:`TestPool` is a pool with a unique name on a sparse file in its own temp dir,
mounted under that dir, destroyed (and the dir removed) at the end even if the test failed.

Caching: Debian's ``/etc/zfs/zfsrc`` sets ``fuse-attr-timeout`` and ``fuse-entry-timeout`` to
3600 s, so after a ``zfs rollback`` the kernel would keep serving the old attributes and
directory entries for an hour. The daemon started here passes ``-a 0 -e 0`` (the command line
wins over zfsrc) so the tests see what a rollback really restored.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ZFS_SOCKET = Path("/var/run/zfs/zfs_socket")
ZFS_FUSE = "zfs-fuse"
#: OpenZFS's control device; zfs-fuse has none (its tools use ZFS_SOCKET).
ZFS_DEVICE = Path("/dev/zfs")


def kernel_zfs() -> bool:
    """OpenZFS's kernel module is loaded: pools need no daemon (and zfs-fuse is not used)."""
    return ZFS_DEVICE.exists()


def zfs_skip_reason() -> str | None:
    """Why ZFS tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "ZFS tests need root (zfs-fuse, FUSE mounts)"
    if kernel_zfs():
        for tool in ("zfs", "zpool"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (Debian package zfsutils-linux)"
        return None
    for tool in (ZFS_FUSE, "zfs", "zpool"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package zfs-fuse; make setup installs it)"
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is missing"
    return None


def _run(*argv: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def daemon_answers() -> bool:
    """True when a zfs-fuse daemon serves the socket (``zpool list`` connects)."""
    if not ZFS_SOCKET.exists():
        return False
    try:
        return _run("zpool", "list", "-H", timeout=10, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


class ZfsFuse:
    """The machine's zfs-fuse daemon: reused if running, else started (and later stopped)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def started_here(self) -> bool:
        return self._proc is not None

    def ensure(self, timeout: float = 20.0) -> None:
        if kernel_zfs() or daemon_answers():
            return
        fd, log = tempfile.mkstemp(prefix="lxcri-zfs-fuse-", suffix=".log")
        self._log = Path(log)
        # -n: stay in the foreground so the PID is ours; --no-kstat-mount: no /zfs-kstat mount
        # left behind; -a/-e 0: no stale FUSE caches after rollback (module docstring).
        self._proc = subprocess.Popen(
            [ZFS_FUSE, "-n", "--no-kstat-mount", "-a", "0", "-e", "0"],
            stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT,
            start_new_session=True)
        os.close(fd)
        deadline = time.monotonic() + timeout
        while not daemon_answers():
            if self._proc.poll() is not None:
                raise RuntimeError(f"zfs-fuse exited with {self._proc.returncode}: "
                                   + self._log.read_text(errors="replace")[-2000:])
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("zfs-fuse did not answer `zpool list`")
            time.sleep(0.03)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the daemon if this object started it (by PID), else leave it alone."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.unlink(missing_ok=True)
            self._log = None


@dataclass
class TestPool:
    """A pool named ``name`` on ``vdev`` (sparse), its root mounted at ``mountpoint``."""

    __test__ = False  # not a pytest test class

    name: str
    folder: Path
    size: int = 512 << 20
    vdev: Path = field(init=False)
    mountpoint: Path = field(init=False)

    def __post_init__(self) -> None:
        self.vdev = self.folder / "vdev0.img"
        self.mountpoint = self.folder / "mnt"

    def create(self) -> None:
        with open(self.vdev, "wb") as f:
            f.truncate(self.size)
        _run("zpool", "create", "-m", str(self.mountpoint), self.name, str(self.vdev))

    def datasets(self) -> list[str]:
        """Every dataset and snapshot of the pool (``zfs list -t all`` works on zfs-fuse)."""
        r = _run("zfs", "list", "-H", "-o", "name", "-t", "all", "-r", self.name, check=False)
        return r.stdout.split() if r.returncode == 0 else []

    def destroy(self) -> None:
        if _run("zpool", "list", "-H", self.name, check=False).returncode == 0:
            # Unmount children first: a busy FUSE mount makes `zpool destroy` fail.
            for ds in reversed(self.datasets()):
                if "@" not in ds:
                    _run("zfs", "umount", "-f", ds, check=False)
            for _ in range(3):
                if _run("zpool", "destroy", "-f", self.name, check=False).returncode == 0:
                    break
                time.sleep(0.3)
        # Anything still mounted below the folder (a mount a failed test left) goes lazily.
        for point in reversed(_mounts_under(self.folder)):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


def _mounts_under(folder: Path) -> list[str]:
    base = os.path.realpath(folder)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if point == base or point.startswith(base + "/"):
                out.append(point)
    return out


def unique_pool_name(prefix: str = "lxt") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def test_pool(size: int = 512 << 20, prefix: str = "lxt") -> Iterator[TestPool]:
    """A fresh pool on a sparse file, destroyed afterwards (the daemon must be running)."""
    folder = Path(tempfile.mkdtemp(prefix="lxcri-zfs-", dir="/tmp"))
    pool = TestPool(unique_pool_name(prefix), folder, size)
    try:
        pool.create()
        yield pool
    finally:
        pool.destroy()


test_pool.__test__ = False  # type: ignore[attr-defined]


# -- pytest fixtures ``zfs_fuse`` and ``zfs_pool``: import ``zfs_fuse_fixture`` and
# ``zfs_pool_fixture`` into a test module to use them (the name= keeps ruff's F811 quiet). -----

try:
    import pytest
except ImportError:  # the benchmarks use the classes above without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture(scope="session", name="zfs_fuse")
    def zfs_fuse_fixture() -> Iterator[ZfsFuse]:
        """The zfs-fuse daemon (started if none runs; stopped at the end only if started
        here), or nothing where OpenZFS's kernel module serves the pools. Skips, with the
        reason, where neither can run."""
        reason = zfs_skip_reason()
        if reason:
            pytest.skip(reason)
        daemon = ZfsFuse()
        daemon.ensure()
        try:
            yield daemon
        finally:
            daemon.stop()

    @pytest.fixture(name="zfs_pool")
    def zfs_pool_fixture(zfs_fuse: ZfsFuse) -> Iterator[TestPool]:
        """A fresh 512 MiB pool on a sparse file, destroyed after the test."""
        with test_pool() as pool:
            yield pool
