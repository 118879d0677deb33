"""``proxmox-lxcri``'s OCI commands end to end, as a caller (runc's conventions) sees them:
exit codes, stdout/stderr, the state JSON, the pid file, the console socket.

Every test uses its own state root and bundle in a temp dir, and deletes its containers with
``delete --force`` even when it fails. Nothing is killed by name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runtime.lxc.mount import mounted_under, unmount
from tests.harness.rootfs import temporary_busybox_rootfs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (LXC containers, mount(2))"),
    pytest.mark.skipif(shutil.which("lxc-execute") is None, reason="lxc-execute not installed"),
]

CLI = [sys.executable, "-c", "from shim.operator_cli import main; main()"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    with temporary_busybox_rootfs("clibb-") as root:
        yield root


@dataclass
class Cli:
    base: Path
    rootfs: Path

    @property
    def root(self) -> Path:
        return self.base / "root"

    def __call__(self, *args: str, input: str | None = None, timeout: float = 30,
                 **kw: Any) -> subprocess.CompletedProcess[str]:
        if "create" not in args:
            return subprocess.run([*CLI, "--root", str(self.root), *args], input=input,
                                  capture_output=True, text=True, timeout=timeout, cwd=REPO,
                                  **kw)
        # The container inherits create's stdout and stderr (runc's pass-through): pipes
        # would stay open after create returns, so they go to files here.
        out, err = self.base / f"out-{uuid.uuid4().hex[:6]}", self.base / "create.err"
        with open(out, "w") as o, open(err, "w") as e:
            rc = subprocess.run([*CLI, "--root", str(self.root), *args], stdout=o, stderr=e,
                                timeout=timeout, cwd=REPO, **kw).returncode
        return subprocess.CompletedProcess(args, rc, out.read_text(), err.read_text())

    def bundle(self, args: list[str], **process: Any) -> Path:
        b = self.base / f"b-{uuid.uuid4().hex[:6]}"
        b.mkdir()
        spec = json.loads(self("spec", "--bundle", str(b)).stdout or "null") or \
            json.loads((b / "config.json").read_text())
        spec["root"] = {"path": str(self.rootfs), "readonly": False}
        spec["process"].update(args=args, **process)
        (b / "config.json").write_text(json.dumps(spec))
        return b

    def state(self, id: str) -> dict[str, Any]:
        done = self("state", id)
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        assert isinstance(data, dict)
        return data


@pytest.fixture
def cli(rootfs: Path) -> Iterator[Cli]:
    base = Path(tempfile.mkdtemp(prefix="clit-"))
    base.chmod(0o755)
    c = Cli(base, rootfs)
    try:
        yield c
    finally:
        ns = c.root / "containers" / "cli"
        for d in ns.iterdir() if ns.is_dir() else []:
            c("delete", "--force", d.name)
        for point in reversed(mounted_under(base)):
            unmount(point)
        shutil.rmtree(base, ignore_errors=True)


def cid() -> str:
    return f"c{uuid.uuid4().hex[:8]}"


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_lifecycle_create_start_kill_delete(cli: Cli) -> None:
    id = cid()
    bundle = cli.bundle(["sleep", "300"])
    done = cli("create", "--bundle", str(bundle), id, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    st = cli.state(id)
    assert st["status"] == "created" and st["bundle"] == str(bundle) and st["id"] == id
    nspid = [ln for ln in Path(f"/proc/{st['pid']}/status").read_text().splitlines()
             if ln.startswith("NSpid:")][0].split()[1:]
    assert nspid == [str(st["pid"]), "1"]
    assert cli("start", id).returncode == 0
    assert cli.state(id)["status"] == "running"
    assert cli("start", id).returncode == 1  # already started
    assert cli("kill", id, "KILL").returncode == 0
    wait_for(lambda: cli.state(id)["status"] == "stopped")
    assert cli.state(id)["pid"] == 0
    time.sleep(0.2)
    assert cli.state(id)["status"] == "stopped"  # keeps answering until delete
    assert cli("delete", id).returncode == 0
    assert cli("state", id).returncode == 1
    assert not (cli.root / "containers" / "cli" / id).exists()
    assert list((cli.root / "lxc").iterdir()) == []


#: A caller that is a subreaper, like containerd-shim-runc or conmon: it runs create with a
#: pid file, checks the PID is its child once create returned, starts, and waits for it.
SUBREAPER = textwrap.dedent("""
    import ctypes, json, os, subprocess, sys
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    cli, root, bundle, id, pidfile = json.loads(sys.argv[1])
    r, w = os.pipe()
    subprocess.run([*cli, "--root", root, "create", "--bundle", bundle, "--pid-file", pidfile,
                    id], check=True, stdout=w, stdin=subprocess.DEVNULL)
    os.close(w)
    pid = int(open(pidfile).read())
    ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    subprocess.run([*cli, "--root", root, "start", id], check=True)
    _, status = os.waitpid(pid, 0)
    out = os.read(r, 4096).decode()
    print(json.dumps({"ppid": ppid, "me": os.getpid(),
                      "status": os.waitstatus_to_exitcode(status), "out": out}))
""")


def test_created_container_is_the_subreapers_child_and_its_status_reaches_it(cli: Cli) -> None:
    id = cid()
    bundle = cli.bundle(["sh", "-c", "echo hello from $0; exit 7"])
    arg = json.dumps([CLI, str(cli.root), str(bundle), id, str(cli.base / "pid")])
    done = subprocess.run([sys.executable, "-c", SUBREAPER, arg], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ppid"] == result["me"]  # re-parented to the caller's subreaper
    assert result["status"] == 7  # the program's exit status, through waitpid
    assert result["out"] == "hello from sh\n"  # create's stdout passed through
    assert cli.state(id)["status"] == "stopped"
    assert cli("delete", id).returncode == 0


def test_console_socket_receives_the_pty_master(cli: Cli) -> None:
    id = cid()
    bundle = cli.bundle(["sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; "
                                  "echo ctty=$(cut -d' ' -f7 /proc/self/stat); echo hi; sleep 2"],
                        terminal=True)
    path = cli.base / "console.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        proc = subprocess.Popen([*CLI, "--root", str(cli.root), "create", "--bundle",
                                 str(bundle), "--console-socket", str(path), id], cwd=REPO,
                                stderr=subprocess.PIPE, text=True)
        server.settimeout(20)
        conn, _ = server.accept()
        with conn:
            msg, fds, _flags, _addr = socket.recv_fds(conn, 1024, 1)
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    assert msg.startswith(b"/dev/pts/") and len(fds) == 1
    master = fds[0]
    try:
        assert cli("start", id).returncode == 0
        data = b""
        deadline = time.monotonic() + 10
        while b"hi" not in data and time.monotonic() < deadline:
            try:
                data += os.read(master, 1024)
            except OSError as exc:
                data += repr(exc).encode()
                break
        assert b"is-a-tty" in data and b"hi" in data, data
        assert b"ctty=0\r" not in data, data  # the pty is the controlling terminal
    finally:
        os.close(master)
    wait_for(lambda: cli.state(id)["status"] == "stopped")


def test_terminal_without_console_socket_is_an_error(cli: Cli) -> None:
    done = cli("create", "--bundle", str(cli.bundle(["true"], terminal=True)), cid())
    assert done.returncode == 1
    assert "process.terminal: a terminal needs --console-socket" in done.stderr


def test_delete_force_of_a_running_container(cli: Cli) -> None:
    id = cid()
    assert cli("create", "--bundle", str(cli.bundle(["sleep", "300"])), id,
               stdin=subprocess.DEVNULL).returncode == 0
    assert cli("start", id).returncode == 0
    pid = cli.state(id)["pid"]
    refused = cli("delete", id)
    assert refused.returncode == 1 and "is running" in refused.stderr
    assert cli("delete", "--force", id).returncode == 0
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or
             Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")
    assert cli("state", id).returncode == 1


def test_errors_are_oci_style_with_a_non_zero_exit(cli: Cli) -> None:
    done = cli("state", "nope")
    assert done.returncode == 1
    assert 'level=error msg="container nope does not exist: not found"' in done.stderr
    done = cli("--log-format", "json", "--log", str(cli.base / "log.json"), "kill", "nope")
    assert done.returncode == 1
    record = json.loads(done.stderr.splitlines()[-1])
    assert record["level"] == "error" and "container nope" in record["msg"]
    assert "container nope" in (cli.base / "log.json").read_text()
    assert cli("kill", "x", "SIGNOPE").returncode == 1


@pytest.mark.parametrize(("mutation", "message"), [
    ({"process": {"args": [], "cwd": "/", "user": {"uid": 0, "gid": 0}}},
     "process.args: must be a non-empty list"),
    ({"ociVersion": "9.9.9"}, "ociVersion: 9.9.9 is not supported"),
    ({"mounts": [{"destination": "relative"}]}, "mounts[0].destination: must be an absolute"),
    ({"linux": {"sysctl": {"kernel.panic": "1"},
                "namespaces": [{"type": t} for t in ("pid", "mount", "uts", "network")]}},
     "linux.sysctl.kernel.panic: not a namespaced sysctl"),
])
def test_invalid_bundle_gives_a_precise_error_and_creates_nothing(
        cli: Cli, mutation: dict[str, Any], message: str) -> None:
    bundle = cli.bundle(["true"])
    spec = json.loads((bundle / "config.json").read_text())
    spec.update(mutation)
    (bundle / "config.json").write_text(json.dumps(spec))
    id = cid()
    done = cli("create", "--bundle", str(bundle), id)
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert not (cli.root / "containers" / "cli" / id).exists()
    assert not any((cli.root / "lxc").iterdir()) if (cli.root / "lxc").exists() else True
    assert mounted_under(cli.base) == []


def test_run_exits_with_the_containers_status(cli: Cli) -> None:
    done = cli("run", "--bundle", str(cli.bundle(["sh", "-c", "echo out; exit 5"])), cid(),
               stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stdout) == (5, "out\n")


def test_ps_exec_pause_resume(cli: Cli) -> None:
    id = cid()
    assert cli("create", "--bundle", str(cli.bundle(["sleep", "300"])), id,
               stdin=subprocess.DEVNULL).returncode == 0
    assert cli("start", id).returncode == 0
    pids = json.loads(cli("ps", "--format", "json", id).stdout)
    assert cli.state(id)["pid"] in pids
    done = cli("exec", "--cwd", "/tmp", id, "sh", "-c", "pwd; echo $PATH")
    assert done.returncode == 0 and done.stdout.splitlines()[0] == "/tmp", done.stderr
    assert cli("exec", id, "sh", "-c", "exit 4").returncode == 4
    assert cli("pause", id).returncode == 0
    assert cli.state(id)["status"] == "paused"
    assert cli("resume", id).returncode == 0
    assert cli.state(id)["status"] == "running"
    assert cli("delete", "--force", id).returncode == 0


def test_spec_and_features(cli: Cli) -> None:
    b = cli.base / "spec"
    b.mkdir()
    assert cli("spec", "--bundle", str(b)).returncode == 0
    spec = json.loads((b / "config.json").read_text())
    assert spec["process"]["args"] == ["sh"] and spec["root"]["readonly"] is True
    assert cli("spec", "--bundle", str(b)).returncode == 1  # never overwrites
    features = json.loads(cli("features").stdout)
    assert "createRuntime" in features["hooks"]
    assert features["linux"]["seccomp"]["enabled"] is True


def test_delete_of_a_created_container_needs_no_force(cli: Cli) -> None:
    id = cid()
    assert cli("create", "--bundle", str(cli.bundle(["echo", "never"])), id,
               stdin=subprocess.DEVNULL).returncode == 0
    pid = cli.state(id)["pid"]
    assert cli("delete", id).returncode == 0
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or
             Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")
    assert "never" not in (cli.base / "create.err").read_text()


# --- the CLI runs the shim's backend code (issue 14 section 1: the copies had drifted) --------


def test_kill_ttin_and_ttou_leave_a_created_container_created(cli: Cli) -> None:
    """SIGTTIN and SIGTTOU do not end a process: the shim's backend delivers them to a created
    container and keeps it created; the CLI's own copy aborted it."""
    id = cid()
    assert cli("create", "--bundle", str(cli.bundle(["echo", "ran"])), id,
               stdin=subprocess.DEVNULL).returncode == 0
    for sig in ("TTIN", "SIGTTOU", str(int(signal.SIGTTIN))):
        done = cli("kill", id, sig)
        assert done.returncode == 0, done.stderr
        assert cli.state(id)["status"] == "created"
    assert cli("start", id).returncode == 0
    wait_for(lambda: cli.state(id)["status"] == "stopped")
    assert "ran" in (cli.base / "create.err").read_text() + _outputs(cli)
    assert cli("delete", id).returncode == 0


def _outputs(cli: Cli) -> str:
    return "".join(p.read_text() for p in cli.base.glob("out-*"))


def test_exec_defaults_are_the_containers_process_as_in_the_shim(cli: Cli) -> None:
    """Without --process the exec is the container's own process with the command as args
    (runc's getProcess; ctr exec sends the shim the same), so its user, cwd and env are the
    container's. The CLI's copy ran as root in lxc-attach's cwd."""
    id = cid()
    bundle = cli.bundle(["sleep", "300"], cwd="/tmp", user={"uid": 1000, "gid": 1001},
                        env=["PATH=/bin:/sbin:/usr/bin", "FOO=from-spec"])
    assert cli("create", "--bundle", str(bundle), id, stdin=subprocess.DEVNULL).returncode == 0
    assert cli("start", id).returncode == 0
    script = 'id -u; id -g; pwd; echo "$FOO" "${BAR:-}"'
    done = cli("exec", id, "sh", "-c", script)
    assert (done.returncode, done.stdout.split()) == (0, ["1000", "1001", "/tmp",
                                                          "from-spec"]), done.stderr
    done = cli("exec", "--user", "0", "--cwd", "/", "-e", "BAR=flag", id, "sh", "-c", script)
    assert done.stdout.split() == ["0", "1001", "/", "from-spec", "flag"], done.stderr
    # --process is the whole process (runc): what it leaves out is the shim's default (uid 0,
    # cwd /), not the container's.
    process = cli.base / "process.json"
    process.write_text(json.dumps({"args": ["/bin/sh", "-c", "id -u; pwd"], "cwd": "/"}))
    done = cli("exec", "--process", str(process), id)
    assert done.stdout.split() == ["0", "/"], done.stderr
    assert cli("delete", "--force", id).returncode == 0


def test_pause_freezes_the_cgroup_as_the_shim_does(cli: Cli) -> None:
    """Pause and resume are the backend's cgroup freezer, as in the shim: lxc-freeze and
    lxc-unfreeze are never called (here they would fail), and the container's cgroup is
    frozen in every hierarchy the shim freezes."""
    from runtime import cgroups

    fake = cli.base / "fakebin"
    fake.mkdir()
    called = cli.base / "lxc-freeze-called"
    for tool in ("lxc-freeze", "lxc-unfreeze"):
        (fake / tool).write_text(f"#!/bin/sh\necho {tool} >> {called}\nexit 1\n")
        (fake / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    id = cid()
    assert cli("create", "--bundle", str(cli.bundle(["sleep", "300"])), id,
               stdin=subprocess.DEVNULL).returncode == 0
    assert cli("start", id).returncode == 0
    pid = cli.state(id)["pid"]
    done = cli("pause", id, env=env)
    assert done.returncode == 0, done.stderr
    assert cli.state(id)["status"] == "paused"
    assert cgroups.is_frozen(cgroups.of_pid(pid))
    done = cli("resume", id, env=env)
    assert done.returncode == 0, done.stderr
    assert not cgroups.is_frozen(cgroups.of_pid(pid))
    assert cli.state(id)["status"] == "running"
    assert not called.exists()
    # A paused container is thawed before a forced delete kills it.
    assert cli("pause", id, env=env).returncode == 0
    assert cli("delete", "--force", id).returncode == 0
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or
             Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_the_cli_and_the_shim_keep_one_task_record(cli: Cli) -> None:
    """state.json is runtime.store.TaskRecord, the shim's record too: it names the backend
    that the delete action cleans up with."""
    from runtime.store import CLI_OWNER, Store

    id = cid()
    assert cli("create", "--bundle", str(cli.bundle(["sleep", "300"])), id,
               stdin=subprocess.DEVNULL).returncode == 0
    rec = Store(cli.root).load_record("cli", id)
    assert rec is not None
    assert (rec.backend, rec.owner, rec.status) == ("lxc", CLI_OWNER, "created")
    assert rec.pid == cli.state(id)["pid"] and rec.oci_version
    [row] = [r for r in json.loads(cli("list", "--json").stdout) if r["id"] == id]
    assert (row["backend"], row["status"], row["pid"]) == ("lxc", "created", rec.pid)
    assert cli("delete", id).returncode == 0
