"""The project's main job on a fresh machine: one busybox container through our shim.

    python -m tests.harness.demo [--runtime io.containerd.proxmox.v2]

Starts a private containerd, builds and imports a busybox image, watches ``ctr events``, runs
``ctr run --rm`` with the runtime, prints its output, exit status and events, then cleans up and
proves that no container, mount or process is left. Exits non-zero if any step fails.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from tests.harness import leaks
from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import PROXMOX_RUNTIME, integration_skip_reason
from tests.harness.image import DEFAULT_REF, build_busybox_image

COMMAND = 'echo "hello from an LXC container: $(hostname)"'


class Steps:
    """Numbered, readable progress lines; remembers failures for the exit status."""

    def __init__(self) -> None:
        self.n = 0
        self.failed: list[str] = []

    def step(self, text: str) -> None:
        self.n += 1
        print(f"\n[{self.n}] {text}", flush=True)

    def info(self, text: str) -> None:
        for line in text.rstrip("\n").splitlines() or [""]:
            print(f"    {line}", flush=True)

    def fail(self, text: str) -> None:
        self.failed.append(text)
        self.info(f"FAILED: {text}")


class EventWatcher:
    """``ctr events`` in the background, its lines collected by a thread."""

    def __init__(self, ctd: PrivateContainerd) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [ctd.ctr_bin, "--address", ctd.address, "events"], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # by PID: it is our child
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.thread.join(5)


def _short_event(line: str, width: int = 150) -> str:
    """``<date> <time> <tz> UTC <ns> <topic> <json>`` → ``<time> <topic> <json…>``, readable."""
    parts = line.split(" ", 6)
    if len(parts) < 7:
        return line
    payload = parts[6] if len(parts[6]) <= width else parts[6][:width] + "…"
    return f"{parts[1][:12]}  {parts[5]:<18} {payload}"


def run(runtime: str) -> int:
    steps = Steps()
    reason = integration_skip_reason()
    if reason:
        print(f"demo cannot run here: {reason}", file=sys.stderr)
        return 2
    cid = f"demo-{uuid.uuid4().hex[:8]}"
    ctd = PrivateContainerd()
    lxc_root = ctd.lxcri_root / "lxc"
    before = leaks.snapshot([ctd.folder], [lxc_root], [cid])
    events: EventWatcher | None = None
    print(f"Proxmox LXCRI demo: runtime {runtime}, container id {cid}")
    try:
        steps.step(f"Starting a private containerd in {ctd.folder}")
        t0 = time.monotonic()
        ctd.start()
        version = ctd.ctr("version").stdout.split("Server:")[-1].split()
        steps.info(f"containerd PID {ctd.pid}, socket {ctd.address}, "
                   f"server {' '.join(version[:2])}, ready in {time.monotonic() - t0:.2f} s")
        steps.info(f"shim state root PROXMOX_LXCRI_ROOT={ctd.lxcri_root}")

        steps.step(f"Building the busybox OCI image {DEFAULT_REF} and importing it")
        with tempfile.TemporaryDirectory(prefix="lxcri-demo-") as tmp:
            tar = build_busybox_image(Path(tmp) / "busybox.tar", DEFAULT_REF)
            steps.info(f"image tar: {tar.stat().st_size} bytes")
            ctd.import_image(tar)
        steps.info(ctd.ctr("images", "ls").stdout)

        steps.step("Watching `ctr events` in the background")
        events = EventWatcher(ctd)
        time.sleep(0.2)  # let it subscribe before the container starts

        steps.step(f"Running the container: ctr run --rm --runtime {runtime} {DEFAULT_REF} "
                   f"{cid} sh -c '{COMMAND}'")
        t0 = time.monotonic()
        r = ctd.ctr("run", "--rm", "--runtime", runtime, DEFAULT_REF, cid, "sh", "-c", COMMAND,
                    check=False, timeout=120)
        elapsed = time.monotonic() - t0
        steps.info("output: " + (r.stdout.strip() or "(none)"))
        if r.stderr.strip():
            steps.info("ctr stderr: " + r.stderr.strip())
        steps.info(f"exit status: {r.returncode}  ({elapsed * 1000:.0f} ms)")
        if r.returncode != 0 or "hello from an LXC container" not in r.stdout:
            steps.fail("the container did not print its greeting and exit 0")

        steps.step(f"containerd events for {cid}")
        time.sleep(0.3)  # the last events (task delete, container delete) may still arrive
        events.stop()
        mine = [_short_event(line) for line in events.lines if cid in line]
        steps.info("\n".join(mine) if mine else "(no events)")
        if not mine:
            steps.fail("no events were seen for the container")
    except Exception as e:  # report, then still clean up below
        steps.fail(f"{type(e).__name__}: {e}")
        log = ctd.log_text()
        if log:
            steps.info("last containerd log lines:\n" + "\n".join(log.splitlines()[-15:]))
    finally:
        if events is not None:
            events.stop()
        steps.step("Cleaning up: containers, containerd, shims, mounts, temporary folder")
        leftover = ""
        if ctd.pid is not None:
            leftover = ctd.ctr("containers", "ls", "-q", check=False).stdout.strip()
        ctd.cleanup()
        if leftover:
            steps.fail(f"containers left in containerd (now removed): {leftover}")
        left = leaks.leaks(before, leaks.snapshot([ctd.folder], [lxc_root], [cid]))
        if os.path.exists(ctd.folder):
            left.append(f"folder {ctd.folder}")
        if left:
            steps.fail("left behind:\n" + "\n".join(left))
        else:
            steps.info("containerd stopped; no container, mount or process left "
                       "(checked with tests.harness.leaks)")
    print()
    if steps.failed:
        print(f"DEMO FAILED ({len(steps.failed)} problem(s)): " + "; ".join(
            f.splitlines()[0] for f in steps.failed))
        return 1
    print("DEMO OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runtime", default=PROXMOX_RUNTIME,
                        help=f"containerd runtime name (default {PROXMOX_RUNTIME})")
    return run(parser.parse_args(argv).runtime)


if __name__ == "__main__":
    sys.exit(main())
