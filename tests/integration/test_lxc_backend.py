"""LxcBackend against the real LXC 5 tools, as root, with a busybox rootfs.

Each test has its own temp dirs and container names, and its fixture deletes what the test
created even when it fails. Nothing is ever killed by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from runtime import errdefs
from runtime.lxc import cleanup
from runtime.lxc.backend import LxcBackend, LxcContainer
from runtime.lxc.mount import mounted_under, unmount
from runtime.reaper import Reaper
from runtime.stdio import fd_ready
from runtime.types import CreateConfig, ExecConfig, Mount, Stdio
from tests.harness import leaks
from tests.harness.rootfs import populate_busybox_rootfs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (LXC containers, mount(2))"),
    pytest.mark.skipif(shutil.which("lxc-execute") is None, reason="lxc-execute not installed"),
]


NO_STDIO = Stdio()


@pytest.fixture(scope="module")
def busybox() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="lxcbb-"))
    populate_busybox_rootfs(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class Env:
    """One test's world: an lxcpath, a bundle, a state dir and the handles to delete."""

    base: Path
    busybox: Path
    backend: LxcBackend
    reaper: Reaper
    handles: list[LxcContainer] = field(default_factory=list)

    @property
    def lxcpath(self) -> Path:
        return self.base / "lxc"

    @property
    def bundle(self) -> Path:
        return self.base / "b"

    @property
    def state_dir(self) -> Path:
        return self.base / "s"

    def fifo(self, name: str) -> Path:
        path = self.base / name
        os.mkfifo(path)
        return path

    def config(self, args: list[str], *, mount: bool = True, stdio: Stdio = NO_STDIO,
               **spec_extra: Any) -> CreateConfig:
        """A spec whose rootfs is the busybox dir bind-mounted (``mount``), or else
        ``root.path`` = ``rootfs`` inside the bundle, populated here."""
        spec: dict[str, Any] = {
            "ociVersion": "1.0.2",
            "process": {"args": args, "env": ["PATH=/bin:/sbin:/usr/bin"], "cwd": "/",
                        "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount",
                                                            "network")]},
        }
        spec.update(spec_extra)
        rootfs: tuple[Mount, ...] = ()
        if mount:
            rootfs = (Mount("bind", str(self.busybox), "", ("rbind", "rw")),)
        elif not (self.bundle / "rootfs").exists():
            populate_busybox_rootfs(self.bundle / "rootfs")
        return CreateConfig(id=f"t{uuid.uuid4().hex[:10]}", namespace="lxctest",
                            bundle=self.bundle, spec=spec, rootfs=rootfs, stdio=stdio,
                            state_dir=self.state_dir)

    async def create(self, config: CreateConfig) -> LxcContainer:
        handle = await self.backend.create(config)
        self.handles.append(handle)
        return handle


@pytest_asyncio.fixture
async def env(busybox: Path) -> AsyncIterator[Env]:
    reaper = Reaper()
    reaper.install(asyncio.get_running_loop(), subreaper=False)
    base = Path(tempfile.mkdtemp(prefix="lxct-"))
    (base / "b").mkdir()
    e = Env(base=base, busybox=busybox, backend=LxcBackend(reaper, base / "lxc"), reaper=reaper)
    try:
        yield e
    finally:
        for handle in e.handles:
            with contextlib.suppress(Exception):
                await handle.delete()
        for point in reversed(mounted_under(base)):
            unmount(point)
        reaper.uninstall()
        shutil.rmtree(base, ignore_errors=True)


def read_fifo_after_exit(fd: int) -> bytes:
    """Everything buffered in a FIFO, and proof that no writer is left: EOF, not EAGAIN."""
    chunks: list[bytes] = []
    while True:
        data = os.read(fd, 65536)  # raises BlockingIOError if a writer were still open
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def open_reader(path: Path) -> int:
    """The client's read end, opened before Create like ctr does."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK)


async def start_when_ready(e: Env, script: str) -> tuple[LxcContainer, int]:
    """Start ``sh -c script``, which prints "ready" once its traps are set, and wait for that
    line: a signal to PID 1 before its handler exists is dropped (PID-1 semantics). Returns
    the handle and the stdout reader (the caller closes it)."""
    out = e.fifo(f"ready-{uuid.uuid4().hex[:6]}")
    reader = open_reader(out)
    handle = await e.create(e.config(["sh", "-c", script], stdio=Stdio(stdout=str(out))))
    await handle.start()
    got = b""
    while b"ready\n" not in got:
        await fd_ready(reader)
        try:
            got += os.read(reader, 64)
        except BlockingIOError:
            continue
    return handle, reader


def assert_gone(e: Env, handle_name: str, pid: int) -> None:
    assert mounted_under(e.bundle) == []
    assert not (e.lxcpath / handle_name).exists()
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


@pytest.mark.asyncio
async def test_echo_hello_through_a_bind_mounted_rootfs(env: Env) -> None:
    out = env.fifo("out")
    reader = open_reader(out)
    try:
        cfg = env.config(["echo", "hello"], stdio=Stdio(stdout=str(out)))
        handle = await env.create(cfg)
        assert mounted_under(env.bundle) == [str(env.bundle / "rootfs")]
        await handle.start()
        assert await handle.wait() == 0
        assert read_fifo_after_exit(reader) == b"hello\n"
        await handle.delete()
        assert_gone(env, handle.name, handle.pid)
        await handle.delete()  # idempotent
    finally:
        os.close(reader)


@pytest.mark.asyncio
async def test_exit_status_passes_through_with_root_path(env: Env) -> None:
    handle = await env.create(env.config(["sh", "-c", "exit 7"], mount=False))
    await handle.start()
    assert await handle.wait() == 7
    assert await handle.wait() == 7  # callable many times
    with pytest.raises(errdefs.NotFound, match="process already finished"):
        handle.kill(signal.SIGTERM)


@pytest.mark.asyncio
async def test_created_state_holds_the_program_until_start(env: Env) -> None:
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    handle = await env.create(env.config(["touch", f"/tmp/{marker}"], mount=False))
    status = Path(f"/proc/{handle.pid}/status").read_text()
    nspid = [ln for ln in status.splitlines() if ln.startswith("NSpid:")][0].split()
    assert nspid[1:] == [str(handle.pid), "1"]
    assert handle.pids()[0] == handle.pid
    await asyncio.sleep(0.3)
    assert not (env.bundle / "rootfs/tmp" / marker).exists()
    await handle.start()
    assert await handle.wait() == 0
    assert (env.bundle / "rootfs/tmp" / marker).exists()
    with pytest.raises(errdefs.FailedPrecondition):
        await handle.start()


@pytest.mark.asyncio
async def test_sigkill_gives_137(env: Env) -> None:
    handle = await env.create(env.config(["sleep", "60"]))
    await handle.start()
    await asyncio.sleep(0.1)
    handle.kill(signal.SIGKILL)
    assert await asyncio.wait_for(handle.wait(), 10) == 137


@pytest.mark.asyncio
@pytest.mark.parametrize("delay", [0, 0.005, 0.02, 0, 0.005, 0.02])
async def test_sigkill_right_after_start_gives_137(env: Env, delay: float) -> None:
    # While LXC still finishes its set-up: its monitor may then hang on its sync socket
    # (LxcContainer._wait_init), and LXC itself calls the start failed.
    handle = await env.create(env.config(["sleep", "60"]))
    await handle.start()
    await asyncio.sleep(delay)
    handle.kill(signal.SIGKILL)
    assert await asyncio.wait_for(handle.wait(), 20) == 137


@pytest.mark.asyncio
async def test_sigterm_reaches_a_program_with_a_handler(env: Env) -> None:
    # The program is PID 1 (runtime.lxc.owninit): TERM reaches it only through a handler,
    # as under runc; test_own_init.py shows a program without one keeps running.
    handle, reader = await start_when_ready(
        env, "trap 'exit 143' TERM; echo ready; sleep 60 & wait")
    try:
        handle.kill(signal.SIGTERM)
        assert await asyncio.wait_for(handle.wait(), 10) == 128 + signal.SIGTERM
    finally:
        os.close(reader)


@pytest.mark.asyncio
async def test_kill_all_and_pids(env: Env) -> None:
    handle = await env.create(env.config(["sh", "-c", "sleep 60 & sleep 61 & wait"]))
    await handle.start()
    for _ in range(100):
        if len(handle.pids()) >= 3:  # sh (PID 1), two sleeps
            break
        await asyncio.sleep(0.02)
    pids = handle.pids()
    assert pids[0] == handle.pid and len(pids) >= 3
    handle.kill(signal.SIGKILL, all=True)
    assert await asyncio.wait_for(handle.wait(), 10) == 137
    assert handle.pids() == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


@pytest.mark.asyncio
async def test_killing_a_created_container_makes_it_exit(env: Env) -> None:
    handle = await env.create(env.config(["sleep", "60"]))
    handle.kill(signal.SIGKILL)
    assert await asyncio.wait_for(handle.wait(), 10) == 137
    with pytest.raises(errdefs.FailedPrecondition):
        await handle.start()
    await handle.delete()
    assert_gone(env, handle.name, handle.pid)


@pytest.mark.asyncio
async def test_a_held_gate_fails_when_the_backend_goes_away(env: Env) -> None:
    # A dead daemon's fds close: the gate reads EOF instead of "go" and LXC aborts the start.
    # Closing the backend's FIFO handles here stands in for the daemon's death.
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    handle = await env.create(env.config(["touch", f"/tmp/{marker}"], mount=False))
    handle._gate.close()  # private on purpose: stands in for the process death
    assert await asyncio.wait_for(handle.wait(), 10) != 0
    assert not (env.bundle / "rootfs/tmp" / marker).exists()
    assert not Path(f"/proc/{handle.pid}").exists() or _is_zombie(handle.pid)


@pytest.mark.asyncio
async def test_stdin_reaches_the_program(env: Env) -> None:
    stdin, out = env.fifo("in"), env.fifo("out")
    reader = open_reader(out)
    try:
        cfg = env.config(["head", "-n", "1"], stdio=Stdio(stdin=str(stdin), stdout=str(out)))
        handle = await env.create(cfg)
        await handle.start()
        await asyncio.sleep(0.2)  # the client opens its write end late: no premature EOF
        writer = os.open(stdin, os.O_WRONLY | os.O_NONBLOCK)
        os.write(writer, b"from stdin\nsecond line\n")
        os.close(writer)
        assert await asyncio.wait_for(handle.wait(), 10) == 0
        assert read_fifo_after_exit(reader) == b"from stdin\n"
    finally:
        os.close(reader)


@pytest.mark.asyncio
async def test_stdin_eof_reaches_the_program(env: Env) -> None:
    stdin, out = env.fifo("in"), env.fifo("out")
    reader = open_reader(out)
    try:
        cfg = env.config(["wc", "-l"], stdio=Stdio(stdin=str(stdin), stdout=str(out)))
        handle = await env.create(cfg)
        writer = os.open(stdin, os.O_WRONLY | os.O_NONBLOCK)
        await handle.start()
        os.write(writer, b"a\nb\n")
        os.close(writer)
        assert await asyncio.wait_for(handle.wait(), 10) == 0
        assert read_fifo_after_exit(reader).strip() == b"2"
    finally:
        os.close(reader)


@pytest.mark.asyncio
async def test_stderr_and_file_uri(env: Env) -> None:
    log = env.base / "logs/c.log"
    uri = f"file://{log}"
    cfg = env.config(["sh", "-c", "echo out; echo err >&2"], stdio=Stdio(stdout=uri, stderr=uri))
    handle = await env.create(cfg)
    await handle.start()
    assert await handle.wait() == 0
    assert sorted(log.read_text().split()) == ["err", "out"]


@pytest.mark.asyncio
async def test_missing_program_is_a_clear_error_and_leaves_nothing(env: Env) -> None:
    cfg = env.config(["nosuchprog", "x"])
    with pytest.raises(errdefs.NotFound,
                       match=r'exec: "nosuchprog": executable file not found in \$PATH'):
        await env.create(cfg)
    assert mounted_under(env.bundle) == []
    assert list(env.lxcpath.glob("*")) == [] if env.lxcpath.exists() else True
    assert processes_mentioning(cfg.id) == []
    assert sorted(p.name for p in env.state_dir.iterdir()) == []


@pytest.mark.asyncio
async def test_missing_rootfs_is_a_clear_error(env: Env) -> None:
    cfg = env.config(["true"], mount=False, root={"path": str(env.base / "nope")})
    with pytest.raises(errdefs.NotFound, match="does not exist"):
        await env.create(cfg)
    assert not (env.lxcpath / f"lxctest-{cfg.id}").exists()


@pytest.mark.asyncio
async def test_missing_bind_source_is_a_clear_error(env: Env) -> None:
    bad = {"destination": "/data", "type": "bind", "source": str(env.base / "missing"),
           "options": ["rbind"]}
    cfg = env.config(["true"], mounts=[bad])
    with pytest.raises(errdefs.NotFound, match=r"mounts\[0\]\.source: .*missing"):
        await env.create(cfg)
    assert mounted_under(env.bundle) == []
    assert not (env.busybox / "data").exists()


@pytest.mark.asyncio
async def test_lxc_setup_failure_quotes_the_lxc_log_and_leaves_nothing(env: Env) -> None:
    bad = {"destination": "/nosuchfs", "type": "nosuchfs", "source": "none"}
    cfg = env.config(["true"], mount=False, mounts=[bad])
    with pytest.raises(errdefs.Internal, match="before the container was created: .*mount"):
        await env.create(cfg)
    assert mounted_under(env.bundle) == []
    assert not (env.lxcpath / f"lxctest-{cfg.id}").exists()
    assert processes_mentioning(cfg.id) == []
    assert leaks.cgroups_named([f"lxctest-{cfg.id}"]) == set()


@pytest.mark.asyncio
async def test_a_gate_timeout_leaves_no_process_and_no_cgroup(env: Env) -> None:
    # The monitor cannot reach the gate within a millisecond: the create fails as a gate
    # timeout, and the killed monitor's cgroups (lxc.monitor.*, lxc.payload.*) are removed.
    backend = LxcBackend(env.reaper, env.lxcpath, gate_timeout=0.001)
    cfg = env.config(["true"])
    with pytest.raises(errdefs.DeadlineExceeded, match="gate did not report"):
        await backend.create(cfg)
    name = f"lxctest-{cfg.id}"
    assert mounted_under(env.bundle) == []
    assert not (env.lxcpath / name).exists()
    assert processes_mentioning(cfg.id) == []
    assert leaks.cgroups_named([name]) == set()


@pytest.mark.asyncio
async def test_spec_mounts_hostname_env_and_user(env: Env) -> None:
    out = env.fifo("out")
    reader = open_reader(out)
    shared = env.base / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("from the host\n")
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/data", "type": "bind", "source": str(shared),
         "options": ["rbind", "ro"]},
    ]
    script = ("hostname; id -u; id -G; echo $GREETING; cat /data/hello.txt; "
              "grep -E ' /(dev/shm|dev/mqueue|data) ' /proc/mounts | cut -d' ' -f2,3 | sort; "
              "touch /data/x 2>/dev/null || echo read-only")
    cfg = env.config(["sh", "-c", script], stdio=Stdio(stdout=str(out)), mounts=mounts,
                     hostname="box1")
    cfg.spec["process"]["env"].append("GREETING=hi there")
    cfg.spec["process"]["user"] = {"uid": 0, "gid": 0, "additionalGids": [10, 20]}
    try:
        handle = await env.create(cfg)
        await handle.start()
        assert await handle.wait() == 0
        lines = read_fifo_after_exit(reader).decode().splitlines()
    finally:
        os.close(reader)
    assert lines[:5] == ["box1", "0", "0 10 20", "hi there", "from the host"]
    assert lines[5].startswith("/data ")  # the bind shows the host filesystem's type
    assert lines[6:] == ["/dev/mqueue mqueue", "/dev/shm tmpfs", "read-only"]


async def run_and_read(env: Env, cfg: CreateConfig) -> str:
    out = env.fifo(f"out-{cfg.id}")
    reader = open_reader(out)
    try:
        cfg = CreateConfig(**{**cfg.__dict__, "stdio": Stdio(stdout=str(out))})
        handle = await env.create(cfg)
        await handle.start()
        assert await asyncio.wait_for(handle.wait(), 10) == 0
        return read_fifo_after_exit(reader).decode()
    finally:
        os.close(reader)


@pytest.mark.asyncio
async def test_a_new_network_namespace_has_only_loopback(env: Env) -> None:
    host_net = f"net:[{os.stat('/proc/self/ns/net').st_ino}]"
    out = await run_and_read(env, env.config(
        ["sh", "-c", "readlink /proc/self/ns/net; ls /sys/class/net"]))
    netns, *links = out.split()
    assert netns != host_net and links == ["lo"]


@pytest.mark.asyncio
async def test_a_network_namespace_path_is_joined(env: Env) -> None:
    name = f"lxct-{uuid.uuid4().hex[:8]}"
    assert (await env.reaper.run(["ip", "netns", "add", name])).returncode == 0
    try:
        path = f"/run/netns/{name}"
        spec_ns = [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"},
                   {"type": "network", "path": path}]
        out = await run_and_read(env, env.config(["readlink", "/proc/self/ns/net"],
                                                 linux={"namespaces": spec_ns}))
        assert out.strip() == f"net:[{os.stat(path).st_ino}]"
    finally:
        await env.reaper.run(["ip", "netns", "delete", name])


@pytest.mark.asyncio
async def test_absent_namespaces_are_the_hosts(env: Env) -> None:
    out = await run_and_read(env, env.config(
        ["sh", "-c", "readlink /proc/self/ns/net; hostname"],
        linux={"namespaces": [{"type": "pid"}, {"type": "mount"}]}))
    assert out.split() == [f"net:[{os.stat('/proc/self/ns/net').st_ino}]", os.uname().nodename]


@pytest.mark.asyncio
async def test_cleanup_kills_a_running_container_and_is_idempotent(env: Env) -> None:
    handle = await env.create(env.config(["sleep", "60"]))
    await handle.start()
    t0 = time.monotonic()
    pid, status = cleanup.cleanup(env.state_dir, env.bundle)
    assert (pid, status) == (handle.pid, 137)
    assert time.monotonic() - t0 < 3
    await asyncio.wait_for(handle.wait(), 10)  # the (here still living) daemon sees the end
    assert_gone(env, handle.name, handle.pid)
    assert cleanup.cleanup(env.state_dir, env.bundle) == (0, 137)
    await handle.delete()


@pytest.mark.asyncio
async def test_cleanup_releases_a_created_container(env: Env) -> None:
    handle = await env.create(env.config(["sleep", "60"]))
    assert cleanup.cleanup(env.state_dir, env.bundle) == (handle.pid, 137)
    await asyncio.wait_for(handle.wait(), 10)  # the gate was aborted: nothing hangs
    assert_gone(env, handle.name, handle.pid)


@pytest.mark.asyncio
async def test_delete_of_a_running_container_kills_it(env: Env) -> None:
    handle = await env.create(env.config(["sleep", "60"]))
    await handle.start()
    await handle.delete()
    assert_gone(env, handle.name, handle.pid)
    assert not (env.state_dir / "lxc.json").exists()


@pytest.mark.asyncio
async def test_create_start_exit_latency(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    samples: list[float] = []
    for _ in range(7):
        out = env.fifo(f"o{len(samples)}")
        reader = open_reader(out)
        try:
            cfg = env.config(["echo", "hi"], mount=False, stdio=Stdio(stdout=str(out)))
            t0 = time.perf_counter()
            handle = await env.create(cfg)
            await handle.start()
            assert await handle.wait() == 0
            samples.append((time.perf_counter() - t0) * 1000)
            assert read_fifo_after_exit(reader) == b"hi\n"
            await handle.delete()
        finally:
            os.close(reader)
    with capsys.disabled():
        print(f"\nLXC create→start→exit (echo hi), ms: "
              f"{' '.join(f'{s:.0f}' for s in sorted(samples))}; "
              f"median {statistics.median(samples):.1f}")
    assert statistics.median(samples) < 2000


# -- linux.cgroupsPath ------------------------------------------------------------------------

CGROUP_ROOT = Path("/sys/fs/cgroup")


@contextlib.contextmanager
def pod_cgroup() -> Iterator[str]:
    """A unique parent cgroup (kubelet's pod cgroup), removed afterwards in every hierarchy."""
    top = f"lxcri-t{uuid.uuid4().hex[:8]}"
    try:
        yield f"{top}/pod"
    finally:
        for hierarchy in CGROUP_ROOT.iterdir():
            for d in (hierarchy / top / "pod", hierarchy / top):
                with contextlib.suppress(OSError):
                    d.rmdir()


@pytest.mark.asyncio
async def test_cgroups_path_places_the_container_and_cleanup_removes_only_its_own(
        env: Env) -> None:
    with pod_cgroup() as pod:
        cfg = env.config(["sleep", "60"], linux={**env.config([]).spec["linux"],
                                                 "cgroupsPath": f"/{pod}/c1"})
        handle = await env.create(cfg)
        await handle.start()
        for hierarchy in ("memory", "pids", "freezer", "unified"):
            procs = (CGROUP_ROOT / hierarchy / pod / "c1" / "cgroup.procs").read_text()
            assert str(handle.pid) in procs.split(), hierarchy
        assert handle.stats().pids_current >= 1  # statistics find it in its new place
        await handle.update({"pids": {"limit": 9}, "devices": [{"allow": False,
                                                                "access": "rwm"}]})
        assert (CGROUP_ROOT / "pids" / pod / "c1" / "pids.max").read_text() == "9\n"
        # The shim-died path: the delete action kills and cleans up from the persisted state.
        assert cleanup.cleanup(env.state_dir, env.bundle) == (handle.pid, 137)
        await asyncio.wait_for(handle.wait(), 10)
        for hierarchy in ("memory", "pids", "unified"):
            assert not (CGROUP_ROOT / hierarchy / pod / "c1").exists(), hierarchy
            assert (CGROUP_ROOT / hierarchy / pod).is_dir(), hierarchy  # the pod's stays
        await handle.delete()


@pytest.mark.asyncio
async def test_a_failed_create_leaves_no_container_cgroup(env: Env) -> None:
    with pod_cgroup() as pod:
        bad = {"destination": "/nosuchfs", "type": "nosuchfs", "source": "none"}
        cfg = env.config(["true"], mount=False, mounts=[bad],
                         linux={**env.config([]).spec["linux"], "cgroupsPath": f"/{pod}/c2"})
        with pytest.raises(errdefs.Internal):
            await env.create(cfg)
        assert not any((h / pod / "c2").exists() for h in CGROUP_ROOT.iterdir())
        assert not any((h / f"lxc.monitor.lxctest-{cfg.id}").exists()
                       for h in CGROUP_ROOT.iterdir())


@pytest.mark.asyncio
async def test_host_pid_namespace_and_its_execs(env: Env) -> None:
    # hostPID: no pid entry in linux.namespaces; the program is not PID 1 and sees the host's
    # processes, and an exec's PID is the one its process has.
    cfg = env.config(["sleep", "60"])
    cfg.spec["linux"]["namespaces"] = [n for n in cfg.spec["linux"]["namespaces"]
                                       if n["type"] != "pid"]
    handle = await env.create(cfg)
    await handle.start()
    for i in range(3):
        out = env.fifo(f"x{i}")
        reader = open_reader(out)
        try:
            ex = await handle.exec(ExecConfig(exec_id=f"e{i}", stdio=Stdio(stdout=str(out)),
                                              process={"args": ["sh", "-c", "echo $$; sleep 1"],
                                                       "env": ["PATH=/bin"], "cwd": "/"}))
            assert await ex.wait() == 0
            assert read_fifo_after_exit(reader) == f"{ex.pid}\n".encode()
        finally:
            os.close(reader)
    handle.kill(signal.SIGKILL)
    assert await asyncio.wait_for(handle.wait(), 10) == 137


@pytest.mark.asyncio
async def test_an_exec_gets_the_containers_seccomp_filter_and_capabilities(env: Env) -> None:
    # The exec's process says nothing of capabilities (the OCI CLI's --process may not): it
    # gets the container's, as under runc, not lxc-attach's full set.
    cfg = env.config(["sleep", "60"])
    cfg.spec["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    cfg.spec["process"]["capabilities"] = {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                                           "permitted": ["CAP_KILL"]}
    handle = await env.create(cfg)
    await handle.start()
    out = env.fifo("x")
    reader = open_reader(out)
    try:
        script = ("grep -E '^(Seccomp|CapEff|CapBnd):' /proc/self/status; "
                  "mkdir /tmp/nope 2>/dev/null || echo denied")
        ex = await handle.exec(ExecConfig(exec_id="s1", stdio=Stdio(stdout=str(out)),
                                          process={"args": ["sh", "-c", script],
                                                   "env": ["PATH=/bin"], "cwd": "/"}))
        assert await ex.wait() == 0
        fields = read_fifo_after_exit(reader).decode().split()
    finally:
        os.close(reader)
    kill = format(1 << 5, "016x")  # CAP_KILL
    assert fields == ["CapEff:", kill, "CapBnd:", kill, "Seccomp:", "2", "denied"]
    handle.kill(signal.SIGKILL)
    assert await asyncio.wait_for(handle.wait(), 10) == 137
