"""Resolving the program inside a rootfs: symlinks relative to the rootfs, PATH search."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime import errdefs
from runtime.lxc.rootfs import env_path, look_path, resolve_in_rootfs


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for d in ("bin", "usr/bin", "opt/app", "etc"):
        (root / d).mkdir(parents=True)
    prog = root / "opt/app/real-prog"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)
    (root / "etc/passwd").write_text("root:x:0:0::/:/bin/sh\n")
    # absolute link: means /opt/app/real-prog *inside* the rootfs
    (root / "usr/bin/prog").symlink_to("/opt/app/real-prog")
    # relative link climbing above the root: clamps at the rootfs root
    (root / "bin/climb").symlink_to("../../../../../opt/app/real-prog")
    # a link to a host path that does not exist inside the rootfs (/bin/sh exists on the host)
    (root / "bin/hostsh").symlink_to("/bin/sh")
    (root / "bin/loop1").symlink_to("loop2")
    (root / "bin/loop2").symlink_to("loop1")
    return root


def test_absolute_symlinks_resolve_inside_the_rootfs(rootfs: Path) -> None:
    assert resolve_in_rootfs(rootfs, "/usr/bin/prog") == rootfs / "opt/app/real-prog"
    assert look_path(rootfs, "prog", ["PATH=/usr/bin"]) == "/usr/bin/prog"


def test_dotdot_never_escapes_the_rootfs(rootfs: Path) -> None:
    assert resolve_in_rootfs(rootfs, "/bin/climb") == rootfs / "opt/app/real-prog"
    assert resolve_in_rootfs(rootfs, "/../../etc/passwd") == rootfs / "etc/passwd"


def test_a_link_to_a_host_only_path_is_not_found(rootfs: Path) -> None:
    assert os.path.exists("/bin/sh")
    with pytest.raises(errdefs.NotFound, match=r'exec: "hostsh": executable file not found'):
        look_path(rootfs, "hostsh", ["PATH=/bin"])


def test_path_search_order_and_the_runc_style_message(rootfs: Path) -> None:
    assert look_path(rootfs, "climb", ["PATH=/usr/bin:/bin"]) == "/bin/climb"
    with pytest.raises(errdefs.NotFound,
                       match=r'^exec: "nosuchprog": executable file not found in \$PATH'):
        look_path(rootfs, "nosuchprog", ["PATH=/usr/bin:/bin"])


def test_the_host_path_is_never_used(rootfs: Path) -> None:
    # "sh" exists on the host's PATH but not in this rootfs
    with pytest.raises(errdefs.NotFound):
        look_path(rootfs, "sh", [])


def test_explicit_paths(rootfs: Path) -> None:
    assert look_path(rootfs, "/opt/app/real-prog", []) == "/opt/app/real-prog"
    assert look_path(rootfs, "./real-prog", [], cwd="/opt/app") == "/opt/app/real-prog"
    with pytest.raises(errdefs.NotFound, match="no such file or directory"):
        look_path(rootfs, "/opt/app/missing", [])
    with pytest.raises(errdefs.NotFound, match="permission denied"):
        look_path(rootfs, "/etc/passwd", [])
    with pytest.raises(errdefs.NotFound, match="permission denied"):
        look_path(rootfs, "/opt/app", [])  # a directory is not executable


def test_symlink_loop_is_an_error(rootfs: Path) -> None:
    with pytest.raises(OSError, match="too many levels"):
        resolve_in_rootfs(rootfs, "/bin/loop1")
    with pytest.raises(errdefs.NotFound):
        look_path(rootfs, "loop1", ["PATH=/bin"])


def test_env_path() -> None:
    assert env_path(["A=1", "PATH=/x", "PATH=/y"]) == "/y"
    assert env_path([]).startswith("/usr/local/sbin:")


def test_explicit_path_through_a_loop_is_not_found(rootfs: Path) -> None:
    with pytest.raises(errdefs.NotFound, match="too many levels of symbolic links"):
        look_path(rootfs, "/bin/loop1", [])
