"""runtime.lxc.rootpath: every path resolves inside the root, whatever the image's symlinks.

Real directories and symlinks in a temp dir; "the host" is a sibling directory whose content
must never change. Each case runs with both engines (openat2 and the component walk), and a
Hypothesis test checks on generated trees that they agree and that nothing outside the root
is ever touched.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.lxc import rootpath
from runtime.lxc.rootpath import Layer

ENGINES = [pytest.param(True, id="openat2"), pytest.param(False, id="walk")]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(root, host): a rootfs and a host directory holding a file that must survive."""
    root, host = tmp_path / "root", tmp_path / "host"
    root.mkdir()
    host.mkdir()
    (host / "node").write_text("precious\n")
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    yield root, host


def snapshot(directory: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every entry below ``directory`` with its type and content (or link text)."""
    found: dict[str, tuple[int, bytes | str]] = {}
    for dirpath, dirs, files in os.walk(directory):
        for name in dirs + files:
            p = Path(dirpath, name)
            st_ = p.lstat()
            content: bytes | str = b""
            if stat.S_ISLNK(st_.st_mode):
                content = os.readlink(p)
            elif stat.S_ISREG(st_.st_mode):
                content = p.read_bytes()
            found[str(p.relative_to(directory))] = (stat.S_IFMT(st_.st_mode), content)
    return found


def resolve(root: Path, path: str, use_openat2: bool,
            layers: tuple[Layer, ...] = ()) -> rootpath.Resolved:
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        return rootpath.resolve(fd, path, layers, use_openat2=use_openat2)
    finally:
        os.close(fd)


def inside(root: Path, found: rootpath.Resolved) -> bool:
    real = os.readlink(f"/proc/self/fd/{found.fd}")
    return real == str(root) or real.startswith(str(root) + "/")


@pytest.mark.parametrize("use_openat2", ENGINES)
@pytest.mark.parametrize("link", ["/HOST", "../../../../HOST", "/../..//./HOST"])
def test_a_link_out_of_the_root_is_followed_inside_it(world: tuple[Path, Path], link: str,
                                                      use_openat2: bool) -> None:
    root, host = world
    (root / "evil").symlink_to(link.replace("HOST", str(host).lstrip("/")))
    before = snapshot(host)
    with resolve(root, "/evil/node", use_openat2) as found:
        assert found.path == str(host) + "/node"  # the same path, but below the root
        assert found.where == "missing" and inside(root, found)
        rootpath.make(found, "file")
    assert (root / str(host).lstrip("/") / "node").is_file()
    assert snapshot(host) == before


@pytest.mark.parametrize("use_openat2", ENGINES)
def test_chains_relative_links_and_dotdot(world: tuple[Path, Path], use_openat2: bool) -> None:
    root, _ = world
    (root / "a/b").mkdir(parents=True)
    (root / "a/b/up").symlink_to("../../../../..")  # climbs past the root: stops at it
    (root / "l1").symlink_to("l2")
    (root / "l2").symlink_to("/a/b/up/etc")
    with resolve(root, "/l1/passwd", use_openat2) as found:
        assert (found.path, found.where) == ("/etc/passwd", "exists")
        assert os.readlink(f"/proc/self/fd/{found.fd}") == str(root / "etc/passwd")
    with resolve(root, "/a/b/../../../etc/./passwd", use_openat2) as found:
        assert found.path == "/etc/passwd"


@pytest.mark.parametrize("use_openat2", ENGINES)
def test_a_loop_is_eloop(world: tuple[Path, Path], use_openat2: bool) -> None:
    root, _ = world
    (root / "x").symlink_to("y")
    (root / "y").symlink_to("/x")
    with pytest.raises(OSError) as info:
        resolve(root, "/x/z", use_openat2)
    assert info.value.errno == errno.ELOOP


@pytest.mark.parametrize("use_openat2", ENGINES)
def test_a_dangling_link_at_the_last_component_is_created_in_the_root(
        world: tuple[Path, Path], use_openat2: bool) -> None:
    root, host = world
    (root / "mnt").symlink_to(str(host / "newdir"))
    before = snapshot(host)
    with resolve(root, "/mnt", use_openat2) as found:
        assert found.path == str(host / "newdir") and found.where == "missing"
        rootpath.make(found, "dir")
    assert (root / str(host).lstrip("/") / "newdir").is_dir()
    assert not (host / "newdir").exists() and snapshot(host) == before
    assert (root / "mnt").is_symlink()  # the link itself is left alone


@pytest.mark.parametrize("use_openat2", ENGINES)
def test_a_file_used_as_a_directory_is_enotdir(world: tuple[Path, Path],
                                               use_openat2: bool) -> None:
    root, _ = world
    with pytest.raises(OSError) as info:
        resolve(root, "/etc/passwd/x", use_openat2)
    assert info.value.errno == errno.ENOTDIR


def test_a_symlink_swapped_in_while_creating_is_not_followed(world: tuple[Path, Path]) -> None:
    root, host = world
    with resolve(root, "/new/deeper/leaf", False) as found:
        assert found.rest == ["new", "deeper", "leaf"]
        (root / "new").symlink_to(str(host))  # the race: after the lookup, before mkdir
        with pytest.raises(OSError):
            rootpath.make(found, "dir")
    assert snapshot(host) == {"node": (stat.S_IFREG, b"precious\n")}


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")
def test_a_device_through_an_image_symlink_stays_in_the_root(world: tuple[Path, Path]) -> None:
    root, host = world
    (root / "evil").symlink_to(str(host))
    before = snapshot(host)
    rootpath.make_devices(str(root), [
        {"path": "/evil/node", "type": "c", "major": 1, "minor": 3, "fileMode": 0o620,
         "uid": 5, "gid": 6},
        {"path": "/dev/sub/fifo", "type": "p"}])
    node = root / str(host).lstrip("/") / "node"
    st_ = node.lstat()
    assert stat.S_ISCHR(st_.st_mode) and stat.S_IMODE(st_.st_mode) == 0o620
    assert (os.major(st_.st_rdev), os.minor(st_.st_rdev), st_.st_uid, st_.st_gid) == (1, 3, 5, 6)
    assert stat.S_ISFIFO((root / "dev/sub/fifo").lstat().st_mode)
    assert snapshot(host) == before
    # An existing node is kept (runc's createDeviceNode), not replaced.
    rootpath.make_devices(str(root), [{"path": "/evil/node", "type": "c", "major": 9,
                                       "minor": 9}])
    assert os.major(node.lstat().st_rdev) == 1


def test_the_device_hook_reports_a_loop_and_names_the_device(world: tuple[Path, Path]) -> None:
    root, _ = world
    (root / "loop").symlink_to("loop")
    errors: list[str] = []
    os.environ["LXC_ROOTFS_MOUNT"] = str(root)
    try:
        rc = rootpath.main(["devices", '[{"path": "/loop/x", "type": "p"}]', "c1", "lxc",
                            "autodev"], errors.append)
    finally:
        del os.environ["LXC_ROOTFS_MOUNT"]
    assert rc == 1 and "linux.devices: /loop/x" in errors[0] and "symbolic links" in errors[0]


def test_layers_mounted_earlier_hide_the_image(world: tuple[Path, Path], tmp_path: Path) -> None:
    root, host = world
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "back").symlink_to("/etc")  # an absolute link in a bind source: the container's
    (root / "run").symlink_to(str(host))  # the image's /run is hidden by a tmpfs
    layers = (Layer("/run"), Layer("/data", str(volume)), Layer("/blk", fresh=False))
    with resolve(root, "/run/x/y", False, layers) as found:
        assert (found.path, found.where, found.rest) == ("/run/x/y", "fresh", ["run", "x", "y"])
    with resolve(root, "/data/back/passwd", False, layers) as found:
        assert (found.path, found.where) == ("/etc/passwd", "exists")
    with resolve(root, "/data/new/dir", False, layers) as found:
        assert (found.base, found.rest, found.where) == ("/data", ["new", "dir"], "missing")
        rootpath.make(found, "dir")
    assert (volume / "new/dir").is_dir()
    with resolve(root, "/blk/x", False, layers) as found:
        assert found.where == "opaque"
    assert snapshot(host) == {"node": (stat.S_IFREG, b"precious\n")}


# --- generated trees -------------------------------------------------------------------------

NAMES = ["a", "b", "c"]
_link_targets = st.lists(st.sampled_from(NAMES + ["..", ".", "HOST"]), min_size=0, max_size=4)


@st.composite
def trees(draw: st.DrawFn) -> list[tuple[str, str, str]]:
    """Entries (path, kind, link target) of a small tree where any name may be a symlink to
    anything: relative, absolute, up and out, into the host, to itself."""
    entries = []
    for parent in ["", "a", "b", "a/b", "c/a"]:
        for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=3)):
            kind = draw(st.sampled_from(["dir", "file", "link"]))
            absolute = draw(st.booleans())
            target = ("/" if absolute else "") + "/".join(draw(_link_targets))
            entries.append((f"{parent}/{name}".lstrip("/"), kind, target))
    return entries


def build(root: Path, host: Path, entries: list[tuple[str, str, str]]) -> None:
    for rel, kind, target in entries:
        path = root / rel
        try:
            if kind == "dir":
                path.mkdir(parents=False)
            elif kind == "file":
                path.write_text("x")
            else:
                path.symlink_to(target.replace("HOST", str(host).lstrip("/")))
        except OSError:  # its parent is a file, a link or missing: skip, as an image may
            pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees(), st.lists(st.sampled_from(NAMES + ["..", "HOST"]), min_size=1, max_size=5))
def test_generated_trees_never_escape_and_both_engines_agree(
        entries: list[tuple[str, str, str]], parts: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, host = Path(tmp, "root"), Path(tmp, "host")
        root.mkdir()
        host.mkdir()
        (host / "a").mkdir()
        (host / "a" / "keep").write_text("keep")
        build(root, host, entries)
        path = "/" + "/".join(parts).replace("HOST", str(host).lstrip("/"))
        before = snapshot(host)
        try:
            walked = resolve(root, path, False)
        except OSError as e:
            assert e.errno in (errno.ELOOP, errno.ENOTDIR)
            if rootpath.have_openat2():
                with pytest.raises(OSError):
                    resolve(root, path, True).close()
            return
        with walked:
            assert inside(root, walked)
            assert ".." not in walked.path.split("/") and "//" not in walked.path
            if walked.where == "exists" and rootpath.have_openat2():
                with resolve(root, path, True) as kernel:
                    assert kernel.path == walked.path
            if walked.where == "missing":
                try:
                    rootpath.make(walked, "dir")
                except OSError as e:  # a component of the rest is used under a file
                    assert e.errno in (errno.ENOTDIR, errno.EEXIST)
                else:
                    with resolve(root, path, True) as again:
                        assert again.path == walked.path and again.where == "exists"
        assert snapshot(host) == before
