"""State files are 0600 and container state directories 0700 (0711 above them, and for a
container with its own user namespace): no other local user reads a container's spec,
environment or annotations (issue 12, docs/security.md "State files")."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from network import statefile
from runtime.store import Store, private_dir, write_private
from storage.state import write_state


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_store_snapshots_are_0600_in_a_0700_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = Store(root)
    old = os.umask(0)  # the modes must not depend on the caller's umask
    try:
        store.save("default", "c1", {"status": "created", "annotations": {"secret": "x"}})
    finally:
        os.umask(old)
    directory = store.container_dir("default", "c1")
    assert mode(directory / "state.json") == 0o600
    assert mode(directory) == 0o700
    assert mode(directory.parent) == 0o711
    assert mode(directory.parent.parent) == 0o711
    assert store.load("default", "c1")["annotations"] == {"secret": "x"}  # type: ignore[index]


def test_store_tightens_levels_another_writer_made_with_default_modes(tmp_path: Path) -> None:
    store = Store(tmp_path)
    directory = store.container_dir("k8s.io", "c2")
    directory.mkdir(parents=True, mode=0o755)
    for level in (directory.parent.parent, directory.parent):
        level.chmod(0o755)
    store.save("k8s.io", "c2", {"status": "created"})
    assert mode(directory.parent) == 0o711
    assert mode(directory.parent.parent) == 0o711
    assert mode(directory / "state.json") == 0o600


def test_a_rewrite_over_a_readable_leftover_temp_file_is_still_0600(tmp_path: Path) -> None:
    path = tmp_path / "d" / "state.json"
    path.parent.mkdir()
    leftover = path.with_name(f".state.json.{os.getpid()}.tmp")
    leftover.write_text("old")
    leftover.chmod(0o644)
    write_private(path, "{}")
    assert mode(path) == 0o600 and path.read_text() == "{}"


def test_private_dir_modes(tmp_path: Path) -> None:
    own = tmp_path / "a" / "b" / "c"
    private_dir(own)
    assert (mode(own), mode(own.parent), mode(own.parent.parent)) == (0o700, 0o711, 0o711)
    private_dir(own, traverse=True)  # a user-namespaced container's directory
    assert mode(own) == 0o711


def test_storage_and_network_state_files_are_0600(tmp_path: Path) -> None:
    write_state(tmp_path / "s", {"pool": "p", "dataset": "p/c1"})
    assert mode(tmp_path / "s" / "storage.json") == 0o600
    statefile.write_json(tmp_path / "n" / "network.json", {"address": "10.0.0.2"})
    assert mode(tmp_path / "n" / "network.json") == 0o600
    assert mode(tmp_path / "n") == 0o700
