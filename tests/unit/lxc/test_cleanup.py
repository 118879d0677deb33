"""cleanup.cleanup from persisted state, without LXC: statuses, idempotence, PID reuse."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from runtime.lxc import cleanup, state


def test_no_state_means_already_clean(tmp_path: Path) -> None:
    assert cleanup.cleanup(tmp_path, tmp_path) == (0, 137)


def test_recorded_exit_status_is_returned_and_files_removed(tmp_path: Path) -> None:
    lxcpath = tmp_path / "lxc"
    (lxcpath / "c1").mkdir(parents=True)
    (lxcpath / "c1/config").write_text("")
    (tmp_path / "lxc.log").write_text("")
    st = state.PersistedState(name="c1", lxcpath=str(lxcpath), bundle=str(tmp_path),
                              pid=999_999_999, pid_start_time=1, exit_status=3)
    state.save(tmp_path, st)
    assert cleanup.cleanup(tmp_path, tmp_path) == (999_999_999, 3)
    assert not (lxcpath / "c1").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lxc"]
    assert cleanup.cleanup(tmp_path, tmp_path) == (0, 137)  # idempotent


def test_a_reused_pid_is_not_killed(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        st = state.PersistedState(name="c2", lxcpath=str(tmp_path), bundle=str(tmp_path),
                                  pid=proc.pid, pid_start_time=state.start_time(proc.pid) + 1)
        state.save(tmp_path, st)
        assert cleanup.cleanup(tmp_path, tmp_path) == (proc.pid, 137)  # no status recorded
        assert proc.poll() is None  # a different process with that PID: left alone
    finally:
        proc.kill()
        proc.wait()


def test_a_live_recorded_process_is_killed(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        st = state.PersistedState(name="c3", lxcpath=str(tmp_path), bundle=str(tmp_path),
                                  pid=proc.pid, pid_start_time=state.start_time(proc.pid),
                                  exit_status=None)
        state.save(tmp_path, st)
        assert cleanup.cleanup(tmp_path, tmp_path) == (proc.pid, 137)
        assert proc.wait(timeout=5) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not os.path.exists(tmp_path / "lxc.json")


def test_kill_all_never_reaches_a_non_container_cgroup() -> None:
    # The test process's own cgroup holds unrelated processes: it must not be "the container's".
    from runtime.lxc import cgroup
    assert cgroup.cgroup_dir(os.getpid(), "c1") is None
    assert cgroup.procs(None) == []
