"""The OCI CLI builds an exec's process as ``runc exec`` does (its getProcess), so that the
shim's Exec code then runs it exactly as it runs ctr's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from runtime.errdefs import InvalidArgument
from runtime.lxc import owninit, security
from runtime.lxc.exec import AttachContext, attach_argv
from shim.oci_cli import exec_process

SPEC: dict[str, Any] = {"process": {"args": ["sleep", "300"], "cwd": "/srv", "terminal": True,
                                    "env": ["PATH=/bin", "A=1"],
                                    "user": {"uid": 1000, "gid": 1001}}}


def args(*command: str, **kw: Any) -> argparse.Namespace:
    base = {"process": None, "cwd": None, "env": None, "user": None}
    return argparse.Namespace(command=list(command), **{**base, **kw})


def test_without_process_the_containers_own_is_the_default() -> None:
    p = exec_process(args("id", "-u"), SPEC)
    assert p["args"] == ["id", "-u"] and p["terminal"] is False
    assert (p["cwd"], p["env"], p["user"]) == ("/srv", ["PATH=/bin", "A=1"],
                                               {"uid": 1000, "gid": 1001})
    assert SPEC["process"]["args"] == ["sleep", "300"]  # the spec is not changed


def test_flags_replace_cwd_and_ids_and_append_env() -> None:
    p = exec_process(args("true", cwd="/", env=["B=2"], user="0"), SPEC)
    assert (p["cwd"], p["env"], p["user"]) == ("/", ["PATH=/bin", "A=1", "B=2"],
                                               {"uid": 0, "gid": 1001})
    with pytest.raises(InvalidArgument, match="user: 'root' is not uid"):
        exec_process(args("true", user="root"), SPEC)
    with pytest.raises(InvalidArgument, match="process.args"):
        exec_process(args(), SPEC)


def test_a_process_file_is_taken_whole(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"args": ["true"]}))
    p = exec_process(args(process=str(f), cwd="/ignored"), SPEC)
    assert p == {"args": ["true"]}


def test_the_shims_exec_code_turns_it_into_the_same_lxc_attach_line(tmp_path: Path) -> None:
    # lxc-attach runs the container's init with the exec's files; user, groups and the
    # working directory are the init's process directives (lxc-attach has no options for
    # groups or cwd).
    ctx = AttachContext(None, "lxc-attach", tmp_path / "lxc", "cli-c1",  # type: ignore[arg-type]
                        tmp_path, tmp_path / "init")
    process = exec_process(args("id"), SPEC)
    argv = attach_argv(ctx, process, "/dev/.lxcri/x-1")
    assert argv[-3:] == ["--", owninit.INIT_PATH, "/dev/.lxcri/x-1"]
    assert ["-v", "A=1"] == argv[argv.index("A=1") - 1:argv.index("A=1") + 1]
    lines = security.process_directives(process, []).splitlines()
    assert "uid 1000" in lines and "gid 1001" in lines and "cwd /srv" in lines
