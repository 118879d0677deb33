"""Mount option parsing and the persisted state file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from runtime.lxc import mount, state


def test_flags_and_data_are_split_like_mount8() -> None:
    p = mount.parse_options(["rbind", "ro", "nosuid", "lowerdir=/a:/b", "rprivate", "index=off"])
    assert p.flags == mount.MS_BIND | mount.MS_REC | mount.MS_RDONLY | mount.MS_NOSUID
    assert p.data == "lowerdir=/a:/b,index=off"
    assert p.propagation == mount.MS_PRIVATE | mount.MS_REC


def test_later_options_override_earlier_ones() -> None:
    assert mount.parse_options(["ro", "rw"]).flags == 0
    assert mount.parse_options([]).data == ""


def test_state_round_trip_is_atomic_json(tmp_path: Path) -> None:
    st = state.PersistedState(name="n", lxcpath="/l", bundle="/b", mounts=["/b/rootfs"], pid=7,
                              pid_start_time=9)
    state.save(tmp_path, st)
    assert json.loads((tmp_path / "lxc.json").read_text())["mounts"] == ["/b/rootfs"]
    assert state.load(tmp_path) == st
    assert [p.name for p in tmp_path.iterdir()] == ["lxc.json"]  # no temp file left
    state.remove(tmp_path)
    assert state.load(tmp_path) is None
    state.save(tmp_path, st, only_if_present=True)
    assert state.load(tmp_path) is None


def test_start_time_guards_pid_reuse() -> None:
    me = os.getpid()
    start = state.start_time(me)
    assert start > 0
    assert state.is_alive(me, start)
    assert not state.is_alive(me, start + 1)
    assert not state.is_alive(0, 0)
