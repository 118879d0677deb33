"""Host side of a batch: boot the guest under QEMU TCG and collect its test reports.

A batch is split into at most ``config.shards()`` shards, one boot each, run side by side: the
guest's pytest is one serial process, so one TCG guest keeps about one host core busy, and on
this 2-core host a second guest halves the wall time of a long batch. Short batches stay in
one boot (each boot costs about 20 s of kernel, module and pytest start-up).

Why TCG: /dev/kvm here is kvm_pvm, which runs only PVM-enabled guest kernels fast; Debian's
stock kernel does not reach /init in 7 minutes under it, while TCG boots it in about 2.5 s
(vm-test-host.md, "Why KVM does not help here").
"""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.kernelhost import cache, config
from tests.kernelhost.guest import FLAVOUR_ENV

# LXCRI_QEMU names another binary (a path, or a name looked up on PATH).
QEMU = os.environ.get("LXCRI_QEMU", "qemu-system-x86_64")
TMP_PREFIX = "lxcri-kernel-"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
KEEP_CONSOLES = 20
MARK = "LXCRI-KERNEL-HOST:"


@dataclass
class BootResult:
    """What one boot (shard) produced. ``error`` is set when the boot as a whole failed."""

    nodeids: list[str]
    reports: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    collect_errors: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None
    console: str = ""
    console_log: Path | None = None
    vm_s: float = 0.0
    timed_out: bool = False
    error: str | None = None

    def console_tail(self, lines: int = 60) -> str:
        return "\n".join(self.console.splitlines()[-lines:])


@dataclass
class BatchResult:
    """All boots of a batch. ``error`` is set when nothing could boot (cache build failed)."""

    boots: list[BootResult] = field(default_factory=list)
    prepare_s: float = 0.0
    wall_s: float = 0.0
    error: str | None = None
    # What the guest was made of (resolved from the archive at run time), and why a cached
    # entry stood in for a fresh resolution, if it did.
    versions: str | None = None
    cache_note: str | None = None

    def boot_of(self, nodeid: str) -> BootResult | None:
        for b in self.boots:
            if nodeid in b.nodeids:
                return b
        return None


def qemu_unusable_reason() -> str | None:
    """Why QEMU cannot run at all here (the batch is then skipped), or None."""
    exe = shutil.which(QEMU)
    if exe is None:
        return f"{QEMU} is not installed (Debian package qemu-system-x86)"
    try:
        out = subprocess.run([exe, "-accel", "help"], capture_output=True, text=True,
                             timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{QEMU} cannot run: {e}"
    if out.returncode != 0 or "tcg" not in out.stdout:
        return f"{QEMU} has no TCG accelerator: {(out.stdout + out.stderr).strip()[:200]}"
    return None


def qemu_command(image: cache.GuestImage, results: Path, console: Path) -> list[str]:
    here = Path(__file__).resolve().parent
    flavour = config.TRIXIE if image.own_root else config.BOOKWORM
    # The kernel flavour keeps QEMU's default (multi-threaded TCG for x86 on x86).
    accel = "tcg" if flavour.tcg_thread == "multi" else f"tcg,thread={flavour.tcg_thread}"
    own_root = [
        # systemd is PID 1 of the root filesystem (guest_init.sh) and boots only
        # lxcri-test.target, whose service runs guest_systemd.sh.
        "lxcri.init=/usr/lib/systemd/systemd", f"lxcri.units={here / 'systemd'}",
        "systemd.unit=lxcri-test.target",
    ] if image.own_root else []
    stage2 = here / ("guest_systemd.sh" if image.own_root else "guest_stage2.sh")
    append = " ".join([
        "console=ttyS0", "quiet", "panic=-1",
        # A throw-away VM with no network and no untrusted code: skipping the speculative
        # execution mitigations saves TLB flushes, which are expensive under TCG.
        "mitigations=off",
        # Layer paths relative to the cache export (see below).
        f"lxcri.layers={':'.join(str(p.relative_to(config.cache_root())) for p in image.layers)}",
        f"lxcri.stage2={stage2}", *own_root,
    ])
    return [
        QEMU, "-accel", accel, "-cpu", config.QEMU_CPU,
        "-m", str(config.GUEST_MEMORY_MB), "-smp", str(config.GUEST_CPUS),
        # -nodefaults and -nic none: no NIC, VGA or monitor; all networking stays in the guest.
        "-nodefaults", "-nic", "none", "-display", "none", "-no-reboot",
        "-serial", f"file:{console}",
        "-kernel", str(image.vmlinux), "-initrd", str(image.initramfs), "-append", append,
        # The host root, read-only; the guest puts a tmpfs overlay on top (vm-test-host.md,
        # step 4). multidevs=remap keeps inode numbers unique across the host's mounts.
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                   "multidevs=remap",
        # The cache again, as its own export: overlayfs refuses lower layers that lie inside
        # another lower layer of the same filesystem ("overlapping lowerdir path"), and a
        # virtio 9p device can be mounted only once.
        "-virtfs", f"local,path={config.cache_root()},mount_tag=kcache,security_model=none,"
                   "readonly=on,multidevs=remap",
        # The only writable export: the batch's own temporary directory (job in, reports out).
        "-virtfs", f"local,path={results},mount_tag=results,security_model=none",
    ]


def _write_job(d: Path, nodeids: Sequence[str], rootdir: Path, modules: Sequence[str],
               pytest_args: Sequence[str], flavour: str = "bookworm") -> None:
    python = sys.executable
    # This checkout's launchers (packaging/setup.sh) first, as in tests/harness/containerd.py.
    checkout_bin = rootdir / ".stamps" / "bin"
    env = {"PATH": f"{Path(python).parent}:{checkout_bin}:/usr/local/sbin:/usr/local/bin:"
                   "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "PYTHONDONTWRITEBYTECODE": "1",
           FLAVOUR_ENV: flavour}
    (d / "job.json").write_text(json.dumps({
        "nodeids": list(nodeids), "args": ["--rootdir", str(rootdir), *pytest_args],
        "env": env}))
    (d / "job.env").write_text(
        f"LXCRI_ROOTDIR={shlex.quote(str(rootdir))}\n"
        f"LXCRI_PYTHON={shlex.quote(python)}\n"
        f"LXCRI_MODULES={shlex.quote(' '.join(modules))}\n"
        f"LXCRI_HOST_PATHS={shlex.quote(' '.join(host_paths(rootdir)))}\n")


def host_paths(rootdir: Path) -> list[str]:
    """What a guest with its own root filesystem binds from the host root: the checkout, the
    environment (venv) and the interpreter's installation it is made from (pyenv's 3.11,
    linked against libc/libm only; its lib-dynload modules find their libraries in the
    root filesystem, see config.TRIXIE_ROOTFS), and the Proxmox API schema the PVE stand-in
    is built from (shared/pve-api beside the worktrees, outside the checkout), if found."""
    from tests.pvestandin.schema import schema_dir  # stdlib only: cheap to import

    schema = schema_dir()
    out: list[str] = []
    for p in (rootdir, Path(sys.prefix), Path(sys.base_prefix), *([schema] if schema else [])):
        p = p.resolve()
        if not any(p == Path(q) or p.is_relative_to(q) for q in out):
            out.append(str(p))
    return out


def _read_results(d: Path, res: BootResult) -> None:
    path = d / "results.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a timeout kill
            if rec.get("kind") == "collect":
                res.collect_errors.append(rec["report"])
            else:
                res.reports.setdefault(rec["nodeid"], []).append(rec["report"])
    rc = d / "exit-code"
    if rc.exists() and rc.read_text().strip().lstrip("-").isdigit():
        res.exit_code = int(rc.read_text())


def _die_with_parent() -> None:
    """In the QEMU child before exec: SIGKILL it when the parent dies, even by SIGKILL.

    prctl(PR_SET_PDEATHSIG) covers what a ``finally`` cannot: a test run killed outright.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _sweep_stale(tmpdir: Path) -> None:
    """Remove batch directories of test runs that died without cleaning up (pid in the name)."""
    for d in tmpdir.glob(f"{TMP_PREFIX}*"):
        try:
            pid = int(d.name[len(TMP_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(d, ignore_errors=True)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt meanwhile, so the ``finally`` that kills QEMU runs."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL QEMU by its PID (its own session) and reap it."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _start(image: cache.GuestImage, d: Path) -> subprocess.Popen[bytes]:
    # QEMU's own stdout/stderr go to a file: nothing reads a pipe while several boots run.
    with (d / "qemu.log").open("wb") as out:
        return subprocess.Popen(qemu_command(image, d, d / "console.log"),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)


def _finish(d: Path, proc: subprocess.Popen[bytes], timeout: float, res: BootResult) -> None:
    console = d / "console.log"
    res.console = console.read_text(errors="replace") if console.exists() else ""
    _read_results(d, res)
    qemu_out = (d / "qemu.log").read_text(errors="replace").strip()
    if res.timed_out:
        res.error = f"the guest did not finish within {timeout:.0f} s and was killed"
    elif proc.returncode != 0:
        res.error = f"QEMU exited with rc {proc.returncode}: {qemu_out[-2000:]}"
    elif res.exit_code is None:
        res.error = "the guest powered off before the batch finished"
    res.console_log = _keep_console(res.console, d.name)


def _wait_all(procs: Sequence[subprocess.Popen[bytes]], results: Sequence[BootResult],
              timeout: float) -> None:
    """Wait for every boot; SIGKILL (by PID) the ones still running at the deadline."""
    t0 = time.monotonic()
    pending = set(range(len(procs)))
    while pending:
        for i in sorted(pending):
            if procs[i].poll() is not None:
                results[i].vm_s = time.monotonic() - t0
                pending.discard(i)
        if pending and time.monotonic() - t0 > timeout:
            for i in pending:
                results[i].timed_out = True
                _kill(procs[i])
                results[i].vm_s = time.monotonic() - t0
            pending.clear()
        time.sleep(0.1)


def _durations_path(fl: config.Flavour) -> Path:
    # Per flavour: the same test takes different times under systemd and LXC 6.
    name = "durations.json" if fl.name == "bookworm" else f"durations-{fl.name}.json"
    return config.cache_root() / name


def load_durations(fl: config.Flavour = config.BOOKWORM) -> dict[str, float]:
    path = _durations_path(fl)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _save_durations(batch: BatchResult, fl: config.Flavour) -> None:
    """Each test's guest time (setup + call + teardown), for planning the next batch's shards."""
    known = load_durations(fl)
    for boot in batch.boots:
        for nodeid, reps in boot.reports.items():
            known[nodeid] = round(sum(float(r.get("duration", 0.0)) for r in reps), 2)
    path = _durations_path(fl)
    try:
        part = path.with_suffix(f".tmp{os.getpid()}")
        part.write_text(json.dumps(known, indent=0, sort_keys=True))
        part.rename(path)
    except OSError:
        pass


def plan_shards(nodeids: Sequence[str], shards: int,
                durations: dict[str, float]) -> list[list[str]]:
    """Split node ids into at most ``shards`` groups of about equal expected guest time.

    Tests of one file stay together (module fixtures run once) unless the file alone is more
    than a fair share, then it is cut into consecutive runs. The groups are filled longest
    first (LPT); each keeps the original order. Unknown tests count config.UNKNOWN_TEST_S.
    """
    ids = list(nodeids)
    cost = {n: durations.get(n, config.UNKNOWN_TEST_S) for n in ids}
    total = sum(cost.values())
    if shards <= 1 or len(ids) < 2 or total < config.MIN_SHARD_S * 2:
        return [ids] if ids else []
    shards = min(shards, max(1, int(total // config.MIN_SHARD_S)))
    by_file: dict[str, list[str]] = {}
    for n in ids:
        by_file.setdefault(n.split("::")[0], []).append(n)
    fair = total / shards
    units: list[list[str]] = []
    for members in by_file.values():
        fcost = sum(cost[n] for n in members)
        if fcost <= fair or len(members) == 1:
            units.append(members)
            continue
        k = min(shards, len(members))
        chunk: list[str] = []
        acc = 0.0
        made = 0
        for n in members:
            chunk.append(n)
            acc += cost[n]
            if acc >= fcost / k and made < k - 1:
                units.append(chunk)
                made += 1
                chunk, acc = [], 0.0
        if chunk:
            units.append(chunk)
    bins: list[list[str]] = [[] for _ in range(shards)]
    loads = [0.0] * shards
    for unit in sorted(units, key=lambda u: -sum(cost[n] for n in u)):
        i = loads.index(min(loads))
        bins[i].extend(unit)
        loads[i] += sum(cost[n] for n in unit)
    order = {n: i for i, n in enumerate(ids)}
    return [sorted(b, key=order.__getitem__) for b in bins if b]


def _keep_console(text: str, tag: str) -> Path | None:
    """Save a batch's console log under <cache>/consoles/, keeping the newest KEEP_CONSOLES.

    One file per batch (time and pid in the name): concurrent test runs must not overwrite
    each other's log.
    """
    d = config.cache_root() / "consoles"
    try:
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{tag}.log"
        path.write_text(text)
        for old in sorted(d.glob("*.log"), key=lambda p: p.stat().st_mtime)[:-KEEP_CONSOLES]:
            old.unlink(missing_ok=True)
        return path
    except OSError:
        return None


def run_batch(nodeids: Sequence[str], rootdir: Path, *, modules: Sequence[str],
              pytest_args: Sequence[str] = (), timeout: float | None = None,
              shards: int | None = None, log: cache.Log = print,
              flavour: config.Flavour = config.BOOKWORM) -> BatchResult:
    """Prepare the cache, boot the shards side by side, run ``nodeids`` and collect reports."""
    batch = BatchResult()
    t0 = time.monotonic()
    try:
        image = cache.prepare(log, flavour)
    except (cache.BuildError, OSError) as e:
        batch.prepare_s = batch.wall_s = time.monotonic() - t0
        batch.error = f"preparing the kernel test host failed: {e}"
        return batch
    batch.prepare_s = time.monotonic() - t0
    batch.versions, batch.cache_note = image.resolved.describe(), image.note
    log(f"kernel test host: {batch.versions}")
    if image.note:
        log(f"kernel test host: NOTE: {image.note}")
    timeout = config.timeout_s() if timeout is None else timeout
    groups = plan_shards(nodeids, config.shards() if shards is None else shards,
                         load_durations(flavour))
    batch.boots = [BootResult(nodeids=g) for g in groups]
    _sweep_stale(Path(tempfile.gettempdir()))
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
    started: list[subprocess.Popen[bytes]] = []
    try:
        with _sigterm_as_interrupt():
            dirs = []
            for i, boot in enumerate(batch.boots):
                d = tmp / f"boot{i}"
                d.mkdir()
                _write_job(d, boot.nodeids, rootdir, modules, pytest_args, flavour.name)
                dirs.append(d)
            for d in dirs:
                started.append(_start(image, d))
            _wait_all(started, batch.boots, timeout)
            for d, proc, boot in zip(dirs, started, batch.boots, strict=True):
                _finish(d, proc, timeout, boot)
    finally:
        # Also on KeyboardInterrupt/SIGTERM: no QEMU and no batch directory outlive the run.
        for proc in started:
            _kill(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    batch.wall_s = time.monotonic() - t0
    _save_durations(batch, flavour)
    return batch
