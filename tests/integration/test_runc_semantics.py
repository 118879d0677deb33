"""Process semantics as under runc (issue 13), through containerd: every test runs on this
runtime and on containerd's runc shim, so each assertion pins runc's behaviour.

The program is PID 1 of its container: ``echo $$`` prints 1, a TERM trap that needs seconds
completes, a program without a TERM handler keeps running until SIGKILL (137), a seccomp
allowlist confines only the program, exec keeps the supplementary groups, exec into a paused
container fails at once, a PID namespace is joined by path, the rootfs propagation is the
spec's.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import BusyboxImage
from tests.harness.rootfs import populate_busybox_rootfs
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

OURS = "io.containerd.proxmox.v2"
RUNC = "io.containerd.runc.v2"
#: containerd's own default profile for `ctr run --seccomp` (an allowlist), as generated on
#: this host: the unit tests' copy.
CTR_SECCOMP = Path(__file__).parents[1] / "unit" / "lxc" / "ctr_seccomp_spec.json"


@pytest.fixture(params=[OURS, RUNC], ids=["proxmox", "runc"])
def runtime(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ids(containerd: PrivateContainerd, unique_id: str) -> Iterator[list[str]]:
    """Container ids for the test (``unique_id`` and suffixes); all removed afterwards."""
    made: list[str] = []
    yield made
    for cid in reversed(made):
        containerd.remove_container(cid)


def new_id(ids: list[str], base: str) -> str:
    # Unique across runs: containers of every containerd on the host share the cgroup tree
    # (/default/<id>), and "groups-0" of two concurrent runs collided there.
    cid = f"{base}-{len(ids)}-{uuid.uuid4().hex[:6]}"
    ids.append(cid)
    return cid


def run(ctd: PrivateContainerd, runtime: str, image: BusyboxImage, cid: str, *cmd: str,
        flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return ctd.ctr("run", "--rm", "--runtime", runtime, *flags, image.ref, cid, *cmd,
                   check=False, timeout=60)


def start_detached(ctd: PrivateContainerd, runtime: str, image: BusyboxImage, cid: str,
                   *cmd: str, flags: tuple[str, ...] = ()) -> int:
    ctd.ctr("run", "-d", "--runtime", runtime, *flags, image.ref, cid, *cmd)
    wait_for(lambda: ctd.task_status(cid) == "RUNNING", what="RUNNING")
    return task_pid(ctd, cid)


def task_pid(ctd: PrivateContainerd, cid: str) -> int:
    line = next(ln for ln in ctd.ctr("task", "ls").stdout.splitlines()
                if ln.split()[:1] == [cid])
    return int(line.split()[1])


def foreground(ctd: PrivateContainerd, runtime: str, image: BusyboxImage, cid: str,
               *cmd: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ctr", "--address", ctd.address, "-n", ctd.namespace, "run", "--rm",
         "--runtime", runtime, image.ref, cid, *cmd],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out


def test_the_program_is_pid_1(containerd: PrivateContainerd, busybox_image: BusyboxImage,
                              runtime: str, ids: list[str]) -> None:
    script = "tr '\\0' ' ' < /proc/1/cmdline; echo; echo $$"
    r = run(containerd, runtime, busybox_image, new_id(ids, "pid1"), "sh", "-c", script)
    assert (r.returncode, r.stdout) == (0, f"sh -c {script} \n1\n"), r.stderr


@pytest.mark.parametrize("code", [0, 7, 143])
def test_exit_codes(containerd: PrivateContainerd, busybox_image: BusyboxImage, runtime: str,
                    ids: list[str], code: int) -> None:
    r = run(containerd, runtime, busybox_image, new_id(ids, "exit"), "sh", "-c", f"exit {code}")
    assert r.returncode == code, r.stderr
    assert "pids.max" not in r.stderr and r.stderr == "", r.stderr


def test_a_term_trap_needing_seconds_completes(containerd: PrivateContainerd,
                                               busybox_image: BusyboxImage, runtime: str,
                                               ids: list[str]) -> None:
    # Kubernetes' grace period: the trap forks (sleep) and takes 4 s; nothing may kill the
    # container meanwhile (LXC's init froze forking and SIGKILLed all after ~1 s).
    cid = new_id(ids, "trap")
    proc = foreground(containerd, runtime, busybox_image, cid, "sh", "-c",
                      "trap 'sleep 4; echo trapped; exit 42' TERM; echo ready; "
                      "sleep 60 & wait")
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    containerd.ctr("task", "kill", cid)  # SIGTERM
    status, out = finish(proc, timeout=15)
    assert (status, out) == (42, "trapped\n")


def test_a_program_without_a_term_handler_keeps_running_until_sigkill(
        containerd: PrivateContainerd, busybox_image: BusyboxImage, runtime: str,
        ids: list[str]) -> None:
    cid = new_id(ids, "ignore")
    proc = foreground(containerd, runtime, busybox_image, cid, "sleep", "60")
    wait_for(lambda: containerd.task_status(cid) == "RUNNING", what="RUNNING")
    containerd.ctr("task", "kill", cid)  # SIGTERM: PID 1 without a handler drops it
    time.sleep(1.5)
    assert proc.poll() is None and containerd.task_status(cid) == "RUNNING"
    containerd.ctr("task", "kill", "-s", "SIGKILL", cid)
    assert finish(proc, timeout=30)[0] == 137


def test_a_seccomp_allowlist_without_close_range_confines_only_the_program(
        containerd: PrivateContainerd, busybox_image: BusyboxImage, runtime: str,
        ids: list[str], tmp_path: Path) -> None:
    profile: dict[str, Any] = json.loads(CTR_SECCOMP.read_text())["linux"]["seccomp"]
    for rule in profile["syscalls"]:
        rule["names"] = [n for n in rule["names"] if n != "close_range"]
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    r = run(containerd, runtime, busybox_image, new_id(ids, "seccomp"), "sh", "-c",
            "echo ran; grep ^Seccomp: /proc/self/status",
            flags=("--seccomp", "--seccomp-profile", str(path)))
    assert (r.returncode, r.stdout.split()) == (0, ["ran", "Seccomp:", "2"]), r.stderr


def _write_spec(ctd: PrivateContainerd, tmp_path: Path, args: list[str],
                **process: Any) -> Path:
    """A whole spec for `ctr run --config` (containerd's default one), on a busybox rootfs."""
    spec = json.loads(subprocess.run(["ctr", "oci", "spec"], capture_output=True, text=True,
                                     check=True).stdout)
    rootfs = tmp_path / "rootfs"
    if not rootfs.exists():
        rootfs.mkdir()
        populate_busybox_rootfs(rootfs)
    spec["root"] = {"path": str(rootfs)}
    spec["process"].update(args=args, env=["PATH=/bin:/sbin:/usr/bin:/usr/sbin"], **process)
    path = tmp_path / f"spec-{len(list(tmp_path.glob('spec-*')))}.json"
    path.write_text(json.dumps(spec))
    return path


def test_exec_keeps_the_supplementary_groups(containerd: PrivateContainerd, runtime: str,
                                             ids: list[str], tmp_path: Path) -> None:
    cid = new_id(ids, "groups")
    spec = _write_spec(containerd, tmp_path, ["sleep", "60"],
                       user={"uid": 0, "gid": 0, "additionalGids": [10, 1234]})
    containerd.ctr("run", "-d", "--runtime", runtime, "--config", str(spec), cid)
    wait_for(lambda: containerd.task_status(cid) == "RUNNING", what="RUNNING")
    main = re.search(r"^Groups:(.*)$", Path(f"/proc/{task_pid(containerd, cid)}/status")
                     .read_text(), re.M)
    assert main is not None and main.group(1).split() == ["10", "1234"]
    r = containerd.ctr("task", "exec", "--exec-id", "g1", cid, "sh", "-c",
                       "grep ^Groups: /proc/self/status; grep ^CapEff: /proc/self/status",
                       check=False, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[1:3] == ["10", "1234"]
    # Exec also gets the spec's capabilities (containerd's default set), not all of them.
    eff = r.stdout.split()[-1]
    main_eff = re.search(r"^CapEff:\s*(\S+)", Path(f"/proc/{task_pid(containerd, cid)}/status")
                         .read_text(), re.M)
    assert main_eff is not None and eff == main_eff.group(1)


def test_exec_into_a_paused_container_fails_at_once(
        containerd: PrivateContainerd, busybox_image: BusyboxImage, runtime: str,
        ids: list[str]) -> None:
    cid = new_id(ids, "paused")
    start_detached(containerd, runtime, busybox_image, cid, "sleep", "60")
    containerd.ctr("task", "pause", cid)
    try:
        r = containerd.ctr("task", "exec", "--exec-id", "p1", cid, "true", check=False,
                           timeout=20)
        assert r.returncode != 0
        assert "paused" in r.stderr, r.stderr
    finally:
        containerd.ctr("task", "resume", cid, check=False)


def test_a_pid_namespace_is_joined_by_path(containerd: PrivateContainerd,
                                           busybox_image: BusyboxImage, runtime: str,
                                           ids: list[str]) -> None:
    first = new_id(ids, "pidns")
    pid = start_detached(containerd, runtime, busybox_image, first, "sleep", "61")
    r = run(containerd, runtime, busybox_image, new_id(ids, "pidns"), "sh", "-c",
            "tr '\\0' ' ' < /proc/1/cmdline; echo; echo $$",
            flags=("--with-ns", f"pid:/proc/{pid}/ns/pid"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "sleep 61 "  # the first container's program is PID 1 of both
    assert lines[1] != "1"


@pytest.mark.parametrize(("propagation", "shared"), [("rprivate", False), ("rshared", True)])
def test_rootfs_propagation(containerd: PrivateContainerd, busybox_image: BusyboxImage,
                            runtime: str, ids: list[str], propagation: str,
                            shared: bool) -> None:
    if runtime == RUNC and shared:
        # Measured with Debian's runc 1.1: its "/" shows no shared:N for rshared either way
        # (the spec asks a shared root; this runtime gives one).
        pytest.skip("runc's rootfs is not shared for rshared on this host")
    r = run(containerd, runtime, busybox_image, new_id(ids, "prop"), "awk",
            '$5 == "/" {for (i = 7; $i != "-"; i++) printf "%s ", $i}', "/proc/self/mountinfo",
            flags=("--rootfs-propagation", propagation))
    assert r.returncode == 0, r.stderr
    assert any(f.startswith("shared:") for f in r.stdout.split()) == shared, r.stdout
