"""How the container is started, measured at the LXC level (no shim, no backend): the
alternatives weighed for "the program is PID 1" (docs/design-notes.md, "One start path").

- ``lxc-execute``: LXC's in-process init is PID 1, the program PID 2 (the former default);
- ``lxc-start -F`` with the project's exec-only init as ``lxc.init.cmd``: the program is
  PID 1, but ``lxc-start`` always exits 0 (the status would need another channel);
- ``lxcri-start`` (runtime/lxc/init/lxcri-start.c): the same start through liblxc, exiting
  with the container's status (what the runtime uses).

Each run starts a busybox container that runs ``true`` and waits for its end; the three run
interleaved (A, B, C, A, B, C …) so the machine's drift hits all alike.

    .venv/bin/python -m bench.start_paths [-n 20] [--record docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import median, percentile, record
from runtime.lxc import owninit
from runtime.lxc.backend import MONITOR
from tests.harness.rootfs import populate_busybox_rootfs

_BASE = """lxc.rootfs.path = dir:{rootfs}
lxc.uts.name = bench
lxc.console.path = none
lxc.tty.max = 0
lxc.pty.max = 16
lxc.mount.auto = proc:rw sys:ro cgroup:mixed:force
lxc.autodev = 1
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
lxc.environment = PATH=/bin
lxc.log.file = {log}
lxc.log.level = WARN
"""


def _setup(base: Path) -> tuple[Path, list[tuple[str, list[str]]]]:
    rootfs = base / "rootfs"
    rootfs.mkdir()
    populate_busybox_rootfs(rootfs)
    lxcpath = base / "lxc"
    init_dir = base / "init"
    init_dir.mkdir()
    shutil.copy2(owninit.BINARY, init_dir / "init.lxc")
    (init_dir / "argv").write_bytes(b"/bin/true\0")
    (init_dir / "process").write_text("uid 0\ngid 0\ngroups\n")
    (init_dir / "stdio").write_text("---")
    for name, extra in (("exe", ""), ("own", f"lxc.mount.entry = {init_dir} dev/.lxcri none "
                                              "bind,create=dir 0 0\n"
                                              f"lxc.init.cmd = {owninit.INIT_PATH}\n")):
        (lxcpath / name).mkdir(parents=True)
        (lxcpath / name / "config").write_text(
            _BASE.format(rootfs=rootfs, log=base / f"{name}.log") + extra)
    log = str(base / "own.log")
    variants = [
        ("lxc-execute (LXC's init PID 1, program PID 2)",
         ["lxc-execute", "-q", "-P", str(lxcpath), "-n", "exe", "--", "/bin/true"]),
        ("lxc-start -F + exec-only init (status lost)",
         ["lxc-start", "-F", "-P", str(lxcpath), "-n", "own"]),
        ("lxcri-start + exec-only init (the runtime's)",
         [str(MONITOR), str(lxcpath), "own", log, "WARN"]),
    ]
    return lxcpath, variants


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20, help="runs per variant (default 20)")
    ap.add_argument("--record", type=Path, help="append the result to this Markdown file")
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="lxcri-start-paths-"))
    try:
        _, variants = _setup(base)
        times: list[list[float]] = [[] for _ in variants]
        for i in range(args.n + 2):
            for k, (_, cmd) in enumerate(variants):
                t0 = time.perf_counter()
                r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                                   timeout=60)
                elapsed = (time.perf_counter() - t0) * 1000
                if r.returncode != 0:
                    raise SystemExit(f"{cmd[0]}: status {r.returncode}: {r.stderr!r}")
                if i >= 2:  # two warm-up rounds
                    times[k].append(elapsed)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    lines = ["| start path | runs | median ms | p90 ms |", "|---|---|---|---|"]
    for (label, _), t in zip(variants, times, strict=True):
        lines.append(f"| {label} | {len(t)} | {median(t):.1f} | {percentile(t, 90):.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.record:
        record(args.record, "Start paths at the LXC level (busybox `true`)", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
