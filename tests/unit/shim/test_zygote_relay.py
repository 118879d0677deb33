"""The zygote's side of the compiled launcher: the request format and the code watch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shim import codewatch, zygote_client
from shim.zygote_relay import BadRequest, Invocation, parse

# What the C launcher can send: C strings (no NUL), environment entries NAME=VALUE.
c_text = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)))
env_names = c_text.filter(lambda s: s and "=" not in s)


def encode(umask: int, cwd: str, argv: list[str], env: list[str]) -> bytes:
    """The request as lxcri-launcher.c's encode() writes it."""
    fields = ["LXCRI1", f"{umask:o}", cwd, str(len(argv)), *argv, *env]
    return b"".join(os.fsencode(f) + b"\0" for f in fields)


@given(umask=st.integers(0, 0o777), cwd=c_text.map(lambda s: "/" + s),
       argv=st.lists(c_text, min_size=1, max_size=8),
       env=st.dictionaries(env_names, c_text, max_size=8))
def test_request_round_trips(umask: int, cwd: str, argv: list[str],
                             env: dict[str, str]) -> None:
    entries = [f"{k}={v}" for k, v in env.items()]
    assert parse(encode(umask, cwd, argv, entries)) == Invocation(umask, cwd, argv, env)


@given(argv=st.lists(c_text, min_size=1, max_size=4), value=c_text)
def test_no_string_runs_into_the_next(argv: list[str], value: str) -> None:
    """A newline, '=' or separator-looking text in one argument stays in that argument."""
    hostile = [a + "\n=LXCRI1" for a in argv]
    got = parse(encode(0o22, "/b", hostile, [f"A={value}\nB=2"]))
    assert got.argv == hostile
    assert got.env == {"A": f"{value}\nB=2"}


def test_environment_entries_without_a_name_are_dropped_and_the_first_wins() -> None:
    got = parse(encode(0o22, "/b", ["x"], ["NOEQUALS", "=v", "A=1", "A=2"]))
    assert got.env == {"A": "1"}  # as getenv(3) finds the first


@pytest.mark.parametrize(("data", "problem"), [
    (b"LXCRI1\x0022\x00/b\x001\x00x", "not NUL-terminated"),
    (b"LXCRI2\x0022\x00/b\x001\x00x\x00", "not a launcher request"),
    (b"LXCRI1\x0022\x00/b\x00", "not a launcher request"),
    (b"LXCRI1\x0099\x00/b\x001\x00x\x00", "bad number"),
    (b"LXCRI1\x001000\x00/b\x001\x00x\x00", "umask out of range"),
    (b"LXCRI1\x0022\x00/b\x002\x00x\x00", "argc 2 does not match"),
    (b"LXCRI1\x0022\x00/b\x000\x00x\x00", "argc 0 does not match"),
    (b"LXCRI1\x0022\x00b\x001\x00x\x00", "not absolute"),
])
def test_malformed_requests_are_refused_with_the_reason(data: bytes, problem: str) -> None:
    with pytest.raises(BadRequest, match=problem):
        parse(data)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for pkg in ("shim", "runtime", "storage", "network", "protos"):
        (tmp_path / pkg / "sub" / "__pycache__").mkdir(parents=True)
        (tmp_path / pkg / "mod.py").write_text("x = 1\n")
        (tmp_path / pkg / "sub" / "deep.py").write_text("y = 2\n")
    return tmp_path


def test_package_dirs_are_every_source_directory(tree: Path) -> None:
    dirs = set(zygote_client.package_dirs(str(tree)))
    assert str(tree / "runtime" / "sub") in dirs
    assert not any(d.endswith("__pycache__") for d in dirs)
    assert len(dirs) == 10


@pytest.mark.parametrize(("change", "matters"), [
    (lambda t: (t / "runtime" / "sub" / "deep.py").write_text("y = 3\n"), True),
    (lambda t: os.utime(t / "shim" / "mod.py", (1, 1)), True),
    (lambda t: (t / "network" / "new.py").write_text(""), True),
    (lambda t: (t / "storage" / "mod.py").rename(t / "storage" / "gone.txt"), True),
    (lambda t: (t / "protos" / "pkg").mkdir(), True),
    (lambda t: (t / "shim" / "sub" / "__pycache__" / "deep.cpython-311.pyc").write_bytes(b""),
     False),
    (lambda t: (t / "shim" / "notes.txt").write_text("x"), False),
    (lambda t: (t / "shim" / "sub" / "__pycache__").rmdir(), False),
])
def test_code_watch_sees_source_changes_only(tree: Path, change: object,
                                             matters: bool) -> None:
    watch = codewatch.open_watch(str(tree))
    assert watch is not None
    try:
        assert not watch.changed()
        change(tree)  # type: ignore[operator]
        assert watch.changed() is matters
        assert not watch.changed()  # read once
    finally:
        watch.close()


def test_code_key_and_watch_cover_the_same_files(tree: Path) -> None:
    """Whatever changes code_key must be seen by the watch: a .py edit in a subdirectory."""
    watch = codewatch.open_watch(str(tree))
    assert watch is not None
    try:
        before = zygote_client._newest_mtime(str(tree / "runtime"), 0.0)
        path = tree / "runtime" / "sub" / "deep.py"
        os.utime(path, (before + 10, before + 10))
        assert zygote_client._newest_mtime(str(tree / "runtime"), 0.0) == before + 10
        assert watch.changed()
    finally:
        watch.close()
