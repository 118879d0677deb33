"""The compiled launcher that containerd executes (shim/launcher/lxcri-launcher.c), with the
zygote that runs its actions (shim/zygote_relay.py), compared with the Python launcher it falls
back to: the same output, exit code and end, the launcher's working directory, umask and
arguments in the action, a kill of either side ending the other, and a zygote whose code
changed handing over. Every containerd test runs through it too (packaging/setup.sh installs
it as containerd-shim-proxmox-v2).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protos.containerd.task.v2 import shim_pb2
from tests.harness import leaks
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / ".stamps" / "bin" / "containerd-shim-proxmox-v2"
FALLBACK = REPO / ".stamps" / "libexec" / "containerd-shim-proxmox-v2"
PACKAGES = ("shim", "runtime", "storage", "network", "protos")
SPAWN = ("import sys; sys.path.insert(0, sys.argv[1]); from shim import zygote_client as z; "
         "z.spawn(z.socket_path())")


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A state root of its own; every process that names it in its environment (the zygote,
    its spare, runner and actions) is killed by PID afterwards."""
    r = tmp_path / "root"
    r.mkdir(mode=0o711)
    try:
        yield r
    finally:
        victims = leaks.processes_mentioning([f"PROXMOX_LXCRI_ROOT={r}"], env=True)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not any(leaks.alive(p) for p in victims), what="the zygote's end")


def env_for(root: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PROXMOX_LXCRI_ROOT": str(root), **extra}


def helpers(root: Path, comm: str) -> list[int]:
    """The zygote's processes for ``root`` whose comm is ``comm`` (lxcri-zygote, lxcri-spare,
    lxcri-runner)."""
    want = f"PROXMOX_LXCRI_ROOT={root}"
    out = []
    for pid in leaks.pids():
        try:
            if (Path(f"/proc/{pid}/comm").read_text().strip() == comm
                    and want in leaks.environ(pid).split("\n")):
                out.append(pid)
        except OSError:
            continue
    return out


def spawn_zygote(root: Path, base: Path = REPO) -> tuple[int, int]:
    """Start a zygote for ``root`` as `start` does; its pid and its runner's, once both wait."""
    subprocess.run([sys.executable, "-c", SPAWN, str(base)], env=env_for(root), check=True)
    wait_for(lambda: len(helpers(root, "lxcri-runner")) == 1, what="the zygote's runner")
    [zygote] = helpers(root, "lxcri-zygote")
    [runner] = helpers(root, "lxcri-runner")
    assert list(root.glob("relay-*.sock")), "the zygote listens for the launcher"
    return zygote, runner


def run(argv0: Path, args: list[str], root: Path, cwd: Path,
        **extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(argv0), *args], cwd=cwd, env=env_for(root, **extra),
                          capture_output=True, timeout=30, check=False)


def next_runner(root: Path, old: int) -> int:
    """The runner that replaced ``old``, which took a request."""
    found: list[int] = []

    def replaced() -> bool:
        found[:] = helpers(root, "lxcri-runner")
        return found not in ([], [old])

    wait_for(replaced, what=f"a runner in place of {old}")
    return found[0]


def parent_of(pid: int) -> int:
    return int(leaks.stat_fields(pid)[1])


def test_actions_end_as_under_the_python_launcher(root: Path, tmp_path: Path) -> None:
    zygote, runner = spawn_zygote(root)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    cases = (
        ["-v"],
        ["-namespace", "ns", "-id", "x", "-address", "/a", "frobnicate"],  # exit 2, on stderr
        ["-id", "x"],  # no namespace: a usage error
        ["-namespace", "ns", "-id", "gone", "-address", "/a", "delete"],  # nothing to delete
    )
    for args in cases:
        ours = run(LAUNCHER, args, root, bundle)
        ref = run(FALLBACK, args, root, bundle)
        if args[-1] == "delete":
            assert (ours.returncode, ours.stderr) == (0, b"")
            got = shim_pb2.DeleteResponse.FromString(ours.stdout)
            want = shim_pb2.DeleteResponse.FromString(ref.stdout)
            assert (got.pid, got.exit_status) == (want.pid, want.exit_status) == (0, 137)
            assert abs(got.exited_at.seconds - want.exited_at.seconds) <= 2
        else:
            assert (ours.returncode, ours.stdout, ours.stderr) == (
                ref.returncode, ref.stdout, ref.stderr), args
        # The runner took the request (and a new one waits): the zygote ran the action.
        runner = next_runner(root, runner)
    assert helpers(root, "lxcri-zygote") == [zygote]


def test_the_action_has_the_launchers_cwd_umask_and_arguments(root: Path,
                                                              tmp_path: Path) -> None:
    zygote, _ = spawn_zygote(root)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    args = ["-namespace", "launcher-test", "-id", tmp_path.name, "-address", "/nowhere",
            "start"]
    # `start` reads its options from stdin first: kept open, the action waits there.
    launcher = subprocess.Popen([str(LAUNCHER), *args], cwd=bundle, env=env_for(root),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, umask=0o027)
    try:
        action = wait_action(zygote)
        assert os.readlink(f"/proc/{action}/cwd") == str(bundle)
        status = Path(f"/proc/{action}/status").read_text()
        assert "\nUmask:\t0027\n" in status
        assert leaks.cmdline(action) == " ".join(["containerd-shim-proxmox-v2", *args])
        # Its end is the launcher's: a death by signal too.
        os.kill(action, signal.SIGKILL)
        assert launcher.wait(timeout=10) == -signal.SIGKILL
    finally:
        launcher.kill()
        launcher.communicate()


def test_a_killed_launcher_takes_its_action_along(root: Path, tmp_path: Path) -> None:
    """As when containerd kills a `start` it gave up on: the action does not go on."""
    zygote, _ = spawn_zygote(root)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    launcher = subprocess.Popen(
        [str(LAUNCHER), "-namespace", "launcher-test", "-id", tmp_path.name, "-address",
         "/nowhere", "start"], cwd=bundle, env=env_for(root), stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        action = wait_action(zygote)
        launcher.kill()
        launcher.wait(timeout=10)
        wait_for(lambda: not leaks.alive(action), timeout=5, what="the action's end")
        assert not (bundle / "address").exists()  # it never got past reading its options
    finally:
        launcher.kill()
        launcher.communicate()
    assert helpers(root, "lxcri-zygote") == [zygote]


def wait_action(zygote: int) -> int:
    """The action the zygote runs for a launcher (its child, named as the shim)."""
    found: list[int] = []

    def look() -> bool:
        found[:] = [p for p in leaks.pids() if leaks.alive(p) and _comm(p) == "containerd-shim"
                    and _parent(p) == zygote]
        return len(found) == 1

    wait_for(look, what="the action in the zygote")
    return found[0]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _parent(pid: int) -> int:
    try:
        return parent_of(pid)
    except (OSError, IndexError, ValueError):
        return 0


def test_without_a_zygote_the_python_launcher_runs(root: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    ours = run(LAUNCHER, ["-v"], root, bundle)
    assert (ours.returncode, ours.stdout) == (0, run(FALLBACK, ["-v"], root, bundle).stdout)
    assert helpers(root, "lxcri-zygote") == []
    # PROXMOX_LXCRI_ZYGOTE=0 keeps the launcher away from a zygote that exists.
    _, runner = spawn_zygote(root)
    ours = run(LAUNCHER, ["-v"], root, bundle, PROXMOX_LXCRI_ZYGOTE="0")
    assert ours.returncode == 0
    time.sleep(0.2)
    assert helpers(root, "lxcri-runner") == [runner]  # not taken


def test_a_zygote_whose_code_changed_hands_over(root: Path, tmp_path: Path) -> None:
    """A copy of the project with a launcher of its own: after a source file changes, its
    zygote ends, and the launcher runs the Python launcher (the new code) until `start`
    starts a zygote for the new code."""
    proj = tmp_path / "proj"
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, proj / pkg, symlinks=True)
    fallback = tmp_path / "fallback"
    fallback.write_text(f"#!{sys.executable} -SP\nimport sys; sys.path.insert(0, {str(proj)!r}); "
                        "from shim.cli import main; main()\n")
    fallback.chmod(0o755)
    relay = subprocess.run(
        [sys.executable, "-SP", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "from shim.zygote_client import relay_name; print(relay_name())", str(proj)],
        capture_output=True, text=True, check=True).stdout.strip()
    launcher = tmp_path / "containerd-shim-proxmox-v2"
    subprocess.run(["gcc", "-static", "-Os", "-Wall", "-Wextra", "-Werror",
                    f'-DLXCRI_FALLBACK="{fallback}"', f'-DLXCRI_RELAY="{relay}"', "-o",
                    str(launcher), str(REPO / "shim" / "launcher" / "lxcri-launcher.c")],
                   check=True)
    bundle = tmp_path / "bundle"
    bundle.mkdir()

    zygote, runner = spawn_zygote(root, proj)
    assert root.joinpath(relay).exists()
    assert run(launcher, ["-v"], root, bundle).returncode == 0
    next_runner(root, runner)

    cli = proj / "shim" / "cli.py"
    cli.write_text(cli.read_text().replace('VERSION = "', 'VERSION = "9.9.9-changed+'))
    wait_for(lambda: not leaks.alive(zygote), timeout=5, what="the old zygote's end")
    assert not root.joinpath(relay).exists()
    assert list(root.glob("zygote-*.sock")) == []
    changed = run(launcher, ["-v"], root, bundle)
    assert (changed.returncode, changed.stderr) == (0, b"")
    assert b"Version: 9.9.9-changed+" in changed.stdout  # the new code ran

    # What `start` does next: a zygote for the new code, which serves the launcher again.
    new_zygote, new_runner = spawn_zygote(root, proj)
    assert new_zygote != zygote
    again = run(launcher, ["-v"], root, bundle)
    assert again.stdout == changed.stdout
    next_runner(root, new_runner)  # the new zygote's runner took it
