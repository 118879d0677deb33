"""What an operator sees of the shim on a node (issue 15): the daemons and the zygote in ``ps``,
``shim.pid`` in the bundle, logfmt lines in containerd's log, the lifecycle event log and
``proxmox-lxcri events``. Driven through a private containerd at log level debug (so that it
passes ``-debug`` to the shim) and the session's containerd at level info."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import leaks
from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import PROXMOX_RUNTIME, BusyboxImage
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# key=value or key="quoted \"value\"" (logrus' TextFormatter, what containerd writes too)
_PAIR = re.compile(r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|\S*)')


def logfmt(line: str) -> dict[str, str]:
    out = {}
    for key, value in _PAIR.findall(line):
        out[key] = json.loads(value) if value.startswith('"') else value
    return out


def shim_lines(ctd: PrivateContainerd) -> list[dict[str, str]]:
    """The shim's lines in containerd's log, parsed (containerd copies them verbatim)."""
    return [logfmt(line) for line in ctd.log_text().splitlines()
            if "runtime=io.containerd.proxmox.v2" in line]


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode()


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def ps(pid: int) -> str:
    out = subprocess.run(["ps", "-ww", "-o", "comm=,args=", "-p", str(pid)],
                         capture_output=True, text=True, check=True).stdout
    return " ".join(out.split())  # ps pads the comm column


def cli(ctd: PrivateContainerd, *args: str,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", "from shim.operator_cli import main; main()",
            "--root", str(ctd.lxcri_root), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=ctd.env, timeout=timeout,
                          cwd=REPO, check=True)


@pytest.fixture(scope="module")
def debug_ctd(busybox_image: BusyboxImage) -> Iterator[PrivateContainerd]:
    """A private containerd at log level debug, with no zygote yet for its state root."""
    # A long namespace and (below) a 64-character id: whole names must still fit.
    ctd = PrivateContainerd(namespace="operator-view-with-a-long-namespace")
    config = ctd.config_path.read_text()
    assert 'level = "info"' in config
    ctd.config_path.write_text(config.replace('level = "info"', 'level = "debug"'))
    try:
        ctd.start()
        ctd.import_image(busybox_image.tar)
        yield ctd
    finally:
        ctd.cleanup()


def run_detached(ctd: PrivateContainerd, image: BusyboxImage, id: str) -> int:
    ctd.ctr("run", "-d", "--runtime", PROXMOX_RUNTIME, image.ref, id, "sleep", "600")
    wait_for(lambda: ctd.task_status(id) == "RUNNING", what=f"{id} RUNNING")
    pid = ctd.shim_pid(id)
    assert pid is not None, f"no shim listens for {id}"
    return pid


def zygotes(ctd: PrivateContainerd, kind: str = "lxcri-zygote") -> list[int]:
    """Zygote processes serving this containerd's state root (its environment names it), or
    with ``kind="lxcri-spare"`` (``"lxcri-runner"``) the spare daemons (runners) they keep."""
    root = f"PROXMOX_LXCRI_ROOT={ctd.lxcri_root}"
    return [p for p in leaks.pids() if comm_or_none(p) == kind
            and root in leaks.environ(p).split("\n")]


def comm_or_none(pid: int) -> str | None:
    try:
        return comm(pid)
    except OSError:
        return None


def assert_named_shim(ctd: PrivateContainerd, pid: int, id: str) -> None:
    want = (f"containerd-shim-proxmox-v2 -namespace {ctd.namespace} -id {id} "
            f"-address {ctd.address}")
    assert cmdline(pid) == want
    assert comm(pid) == "containerd-shim"  # the 15 characters the kernel keeps, as for runc's
    assert ps(pid) == f"containerd-shim {want}"
    bundle = ctd.bundle_dir(id)
    assert (bundle / "shim.pid").read_text() == str(pid)


def test_shims_and_zygote_are_named_in_ps(debug_ctd: PrivateContainerd,
                                          busybox_image: BusyboxImage, unique_id: str) -> None:
    ctd = debug_ctd
    # The second id as long as a CRI one (64 characters): its whole name still shows.
    first, second = f"{unique_id}-fb", f"{unique_id}-zy".ljust(64, "0")
    try:
        # No zygote serves this fresh state root yet: `start` forks the daemon itself (the
        # fallback) and starts a zygote for the next task.
        assert zygotes(ctd) == []
        fallback = run_detached(ctd, busybox_image, first)
        assert_named_shim(ctd, fallback, first)

        wait_for(lambda: zygotes(ctd), what="the zygote")
        [zygote] = zygotes(ctd)
        assert re.fullmatch(r"proxmox-lxcri-zygote [0-9a-f]{16}", cmdline(zygote))
        assert ps(zygote).startswith("lxcri-zygote proxmox-lxcri-zygote ")
        zsock = ctd.lxcri_root / f"zygote-{cmdline(zygote).split()[1]}.sock"
        wait_for(zsock.exists, what="the zygote's socket")
        # The zygote keeps a spare daemon waiting for the next `start` (shim/zygote.py).
        wait_for(lambda: zygotes(ctd, "lxcri-spare"), what="the spare daemon")
        [spare] = zygotes(ctd, "lxcri-spare")
        assert cmdline(spare) == f"{cmdline(zygote)} spare"
        # ... and a runner, which runs the next `start` or `delete` that containerd executes
        # (the compiled launcher hands it over, shim/zygote_relay.py).
        wait_for(lambda: zygotes(ctd, "lxcri-runner"), what="the runner")
        [runner] = zygotes(ctd, "lxcri-runner")
        assert cmdline(runner) == f"{cmdline(zygote)} runner"

        forked = run_detached(ctd, busybox_image, second)
        assert forked == spare  # the spare took the task and became its daemon
        wait_for(lambda: zygotes(ctd, "lxcri-runner") not in ([], [runner]),
                 what="a new runner (the last one ran this `start`)")
        zlog = ctd.lxcri_root / "runtime" / "zygote.log"
        # The zygote logs each daemon it forks: this one came from it.
        lines = [logfmt(line) for line in zlog.read_text().splitlines()]
        assert any(line.get("daemon_pid") == str(forked) for line in lines), lines
        assert all(line.get("runtime") == "io.containerd.proxmox.v2" for line in lines)
        assert_named_shim(ctd, forked, second)
        assert forked != fallback
    finally:
        ctd.remove_container(first)
        ctd.remove_container(second)


def test_shim_logs_logfmt_lines_with_fields(debug_ctd: PrivateContainerd,
                                            busybox_image: BusyboxImage,
                                            unique_id: str) -> None:
    ctd = debug_ctd
    id = unique_id
    try:
        run_detached(ctd, busybox_image, id)
        ctd.ctr("task", "exec", "--exec-id", "probe", id, "true")
        ctd.ctr("task", "kill", "-s", "SIGKILL", id)
        wait_for(lambda: ctd.task_status(id) == "STOPPED", what="STOPPED")
        ctd.ctr("task", "delete", id)
        wait_for(lambda: any(r.get("rpc") == "Shutdown" and r.get("container_id") == id
                             for r in shim_lines(ctd)), what="the Shutdown line")
    finally:
        ctd.remove_container(id)
    mine = [r for r in shim_lines(ctd) if r.get("container_id") == id]
    rpcs = {(r["rpc"], r["level"]) for r in mine if "rpc" in r}
    # Lifecycle RPCs at info, the ones containerd polls at debug (containerd passed -debug).
    for rpc in ("Create", "Start", "Exec", "Kill", "Delete"):
        assert (rpc, "info") in rpcs, (rpc, sorted(rpcs))
    assert ("State", "debug") in rpcs or ("Wait", "debug") in rpcs, sorted(rpcs)
    for r in mine:
        assert r["time"].endswith("Z") and r["msg"] is not None
        assert r["namespace"] == ctd.namespace
        if "rpc" in r:
            assert re.fullmatch(r"[0-9.]+(s|ms|µs)", r["duration"]), r
    assert any(r.get("rpc") == "Exec" and r.get("exec_id") == "probe" for r in mine)
    # Lines logged while an RPC ran name the container too (the supervisor's, not only ours).
    assert any(r.get("logger", "").startswith("runtime.") for r in mine), mine


def test_info_level_containerd_gets_no_debug_lines(containerd: PrivateContainerd,
                                                   busybox_image: BusyboxImage,
                                                   unique_id: str) -> None:
    try:
        r = containerd.ctr("run", "--rm", "--runtime", PROXMOX_RUNTIME, busybox_image.ref,
                           unique_id, "true")
        assert r.returncode == 0
    finally:
        containerd.remove_container(unique_id)
    mine = [r for r in shim_lines(containerd) if r.get("container_id") == unique_id]
    assert any(r.get("rpc") == "Create" and r["level"] == "info" for r in mine), mine
    assert [r for r in mine if r["level"] == "debug"] == []


def test_event_log_records_the_lifecycle(debug_ctd: PrivateContainerd,
                                         busybox_image: BusyboxImage, unique_id: str) -> None:
    ctd = debug_ctd
    id = unique_id
    try:
        run_detached(ctd, busybox_image, id)
        ctd.ctr("task", "exec", "--exec-id", "e1", id, "true")
        ctd.ctr("task", "kill", "-s", "SIGKILL", id)
        wait_for(lambda: ctd.task_status(id) == "STOPPED", what="STOPPED")
        ctd.ctr("task", "delete", id)
    finally:
        ctd.remove_container(id)
    log = ctd.lxcri_root / "runtime" / "events.log"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    mine = [e for e in events if e.get("source") == "task" and e.get("container_id") == id]
    names = [(e["event"], e.get("exec_id")) for e in mine]
    for want in [("create", None), ("start", None), ("exec", "e1"), ("start", "e1"),
                 ("kill", None), ("delete", None)]:
        assert want in names, (want, names)
    for e in mine:
        assert e["ok"] is True and e["namespace"] == ctd.namespace
        assert isinstance(e["seconds"], float) and 0 <= e["seconds"] < 60
    create = next(e for e in mine if e["event"] == "create")
    assert create["pid"] > 0
    delete = next(e for e in mine if e["event"] == "delete" and "exec_id" not in e)
    assert delete["exit_status"] == 137

    # The operator reads the same through the CLI.
    out = cli(ctd, "events", "--source", "task").stdout.splitlines()
    create_line = next(line for line in out if f"/{id}" in line and " create " in line)
    assert re.search(r" ok +[0-9.]+ms ", create_line), create_line
    assert f"{ctd.namespace}/{id}" in create_line
    as_json = [json.loads(line) for line in cli(ctd, "events", "--json").stdout.splitlines()]
    assert [e for e in as_json if e.get("container_id") == id] == mine


def test_failed_operation_is_recorded(debug_ctd: PrivateContainerd,
                                      busybox_image: BusyboxImage, unique_id: str) -> None:
    ctd = debug_ctd
    id = unique_id
    try:
        run_detached(ctd, busybox_image, id)
        r = ctd.ctr("task", "exec", "--exec-id", "bad", id, "/no/such/program", check=False)
        assert r.returncode != 0
    finally:
        ctd.remove_container(id)
    log = ctd.lxcri_root / "runtime" / "events.log"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    failed = [e for e in events if e.get("container_id") == id and e.get("exec_id") == "bad"
              and e["ok"] is False]
    assert failed, [e for e in events if e.get("container_id") == id]
    assert all(e["error"] for e in failed)
    line = next(x for x in cli(ctd, "events").stdout.splitlines() if "exec=bad" in x
                and "FAILED" in x)
    assert "error=" in line
