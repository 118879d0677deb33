"""Dataset names, checkpoint names and the image source of a task's rootfs mounts."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errdefs import InvalidArgument, NotFound
from runtime.types import Mount
from storage import layout
from storage.layers import ImageSource, apply_upper, image_source


def test_names() -> None:
    assert layout.container_dataset("tank", "web-1") == "tank/containers/web-1"
    assert layout.base_snapshot("tank", "abc") == "tank/images/abc@base"
    assert layout.checkpoint_name(1764139200) == "checkpoint-1764139200"
    assert layout.checkpoint_name(1764139200, 2) == "checkpoint-1764139200-2"
    assert layout.checkpoint_order("checkpoint-5-2") == (5, 2)
    assert layout.checkpoint_order("checkpoint-5") == (5, 0)
    assert layout.checkpoint_order("base") is None
    assert layout.check_checkpoint_name("tank/c@checkpoint-9") == "checkpoint-9"


@pytest.mark.parametrize("bad", ["", "a/b", "a@b", "a b", "-a", "x" * 300])
def test_bad_container_ids(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="container id"):
        layout.container_dataset("tank", bad)


def test_overlay_source() -> None:
    m = Mount("overlay", "overlay", "", ("index=off", "workdir=/s/3/work", "upperdir=/s/3/fs",
                                        "lowerdir=/s/2/fs:/s/1/fs"))
    assert image_source([m]) == ImageSource(("/s/2/fs", "/s/1/fs"), "/s/3/fs")


def test_bind_source() -> None:
    assert image_source([Mount("bind", "/snap/fs", "", ("rbind", "rw"))]).lowers == ("/snap/fs",)


@pytest.mark.parametrize("mounts, message", [
    ([], "exactly one rootfs mount"),
    ([Mount("overlay", "overlay", "", ("upperdir=/u",))], "without lowerdir"),
    ([Mount("tmpfs", "tmpfs")], "mount type 'tmpfs' is not supported"),
])
def test_unsupported_mounts(mounts: list[Mount], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        image_source(mounts)


def test_key_follows_layer_identity(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    key = ImageSource((str(a), str(b))).key()
    assert key == ImageSource((str(a), str(b))).key() and len(key) == 24
    assert key != ImageSource((str(b), str(a))).key()
    a.rmdir()
    a.mkdir()  # same path, new directory: another image
    assert key != ImageSource((str(a), str(b))).key()
    with pytest.raises(NotFound, match="rootfs layer"):
        ImageSource((str(tmp_path / "gone"),)).key()


def test_apply_upper_with_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    import os

    dest, upper = tmp_path / "dest", tmp_path / "upper"
    (dest / "etc").mkdir(parents=True)
    (dest / "etc/keep").write_text("k")
    (dest / "etc/gone").write_text("g")
    (dest / "opaque").mkdir()
    (dest / "opaque/hidden").write_text("h")
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/new").write_text("n")
    os.mknod(upper / "etc/gone", 0o600 | 0o020000, os.makedev(0, 0))
    (upper / "opaque").mkdir()
    (upper / "opaque/visible").write_text("v")
    try:
        os.setxattr(upper / "opaque", "trusted.overlay.opaque", b"y")
        opaque = True
    except OSError:  # tmpfs without trusted xattrs (not root): the opaque case is skipped
        opaque = False
    (upper / "link").symlink_to("/etc/new")
    assert apply_upper(str(upper), str(dest)) >= 4
    assert (dest / "etc/keep").read_text() == "k" and (dest / "etc/new").read_text() == "n"
    assert not (dest / "etc/gone").exists()
    assert os.readlink(dest / "link") == "/etc/new"
    assert (dest / "opaque/visible").exists()
    if opaque:
        assert not (dest / "opaque/hidden").exists()
