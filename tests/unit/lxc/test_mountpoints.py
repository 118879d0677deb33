"""runtime.lxc.mountpoints: mount points resolved in mount order, made inside the rootfs (or an
earlier bind source), never on the host; LXC's create= only inside a filesystem it mounts."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import errdefs
from runtime.lxc import rootpath
from runtime.lxc.config import PROVIDED_BY_LXC
from runtime.lxc.mountpoints import Target, prepare
from tests.unit.lxc.test_rootpath import snapshot


def spec_with(mounts: list[dict[str, Any]], **linux: Any) -> dict[str, Any]:
    return {"mounts": mounts, "linux": linux}


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    root, host = tmp_path / "root", tmp_path / "host"
    for d in (root / "etc", root / "proc", host):
        d.mkdir(parents=True)
    (host / "node").write_text("precious\n")
    (root / "evil").symlink_to(host)
    (root / "rel").symlink_to("../../../../.." + str(host))
    (root / "etc/resolv.conf").symlink_to("../run/resolve/stub.conf")
    return root, host


def test_targets_in_mount_order(world: tuple[Path, Path], tmp_path: Path) -> None:
    root, host = world
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "up").symlink_to("/etc")
    hosts = tmp_path / "hosts"
    hosts.write_text("")
    inner = str(host)
    plan = prepare(spec_with([
        {"destination": "/proc", "type": "proc"},                                     # 0: LXC's
        {"destination": "/evil/mnt", "type": "tmpfs", "source": "tmpfs"},             # 1
        {"destination": "/rel/hosts", "type": "bind", "source": str(hosts)},          # 2
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},                # 3
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs"},                  # 4
        {"destination": "/etc/resolv.conf", "type": "bind", "source": str(hosts)},    # 5
        {"destination": "/vol", "type": "bind", "source": str(volume)},               # 6
        {"destination": "/vol/up/x", "type": "tmpfs", "source": "tmpfs"},             # 7
        {"destination": "/vol/sub/y", "type": "tmpfs", "source": "tmpfs"},            # 8
    ], maskedPaths=["/evil/node", "/proc/kcore"]), root, PROVIDED_BY_LXC)
    assert 0 not in plan.mounts
    assert plan.mounts[1] == Target(f"{inner}/mnt")  # made here, in the rootfs
    assert plan.mounts[2] == Target(f"{inner}/hosts")
    assert plan.mounts[3] == Target("/dev/shm", "dir")  # LXC makes it, in its /dev tmpfs
    assert plan.mounts[4] == Target("/run")
    assert plan.mounts[5] == Target("/run/resolve/stub.conf", "file")  # in the tmpfs at /run
    assert plan.mounts[6] == Target("/vol")
    assert plan.mounts[7] == Target("/etc/x")  # the volume's absolute link: the container's /etc
    assert plan.mounts[8] == Target("/vol/sub/y")
    assert plan.paths == {"/evil/node": f"{inner}/node", "/proc/kcore": "/proc/kcore"}
    made = root / inner.lstrip("/")
    assert (made / "mnt").is_dir() and (made / "hosts").is_file()
    assert (root / "etc/x").is_dir() and (volume / "sub/y").is_dir()
    assert not (root / "run/resolve").exists()
    assert snapshot(host) == {"node": (32768, b"precious\n")}


@pytest.mark.parametrize(("extra", "message"), [
    ({"mounts": [{"destination": "/loop/x", "type": "tmpfs"}]},
     r"mounts\[0\]\.destination: /loop/x: too many levels of symbolic links"),
    ({"mounts": [{"destination": "/toroot", "type": "tmpfs"}]},
     r"mounts\[0\]\.destination: /toroot: resolves to the container's root"),
    ({"mounts": [{"destination": "/etc/passwd/x", "type": "tmpfs"}]},
     r"mounts\[0\]\.destination: /etc/passwd/x: Not a directory"),
    ({"linux": {"devices": [{"path": "/loop/n", "type": "p"}]}},
     r"linux\.devices\[0\]\.path: /loop/n: too many levels"),
    ({"linux": {"maskedPaths": ["/toroot"]}},
     r"linux\.maskedPaths\[0\]: /toroot: resolves to the container's root"),
])
def test_bad_paths_are_errors_naming_the_field(world: tuple[Path, Path], extra: dict[str, Any],
                                               message: str) -> None:
    root, host = world
    (root / "loop").symlink_to("loop")
    (root / "toroot").symlink_to("../..")
    (root / "etc/passwd").write_text("")
    with pytest.raises(errdefs.InvalidArgument, match=message):
        prepare(extra, root, PROVIDED_BY_LXC)
    assert snapshot(host) == {"node": (32768, b"precious\n")}


# --- generated mount lists over hostile trees -------------------------------------------------

_parts = st.lists(st.sampled_from(["a", "b", "evil", "rel", "loop", "vol", "run", "dev", ".."]),
                  min_size=1, max_size=4)
_mounts = st.lists(st.tuples(_parts, st.sampled_from(["tmpfs", "bind-dir", "bind-file", "ext4"])),
                   min_size=1, max_size=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mounts)
def test_generated_mounts_never_touch_the_host(mounts: list[tuple[list[str], str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, host, volume = Path(tmp, "root"), Path(tmp, "host"), Path(tmp, "volume")
        for d in (root / "a", host / "a", volume):
            d.mkdir(parents=True)
        (host / "node").write_text("precious\n")
        (root / "evil").symlink_to(host)
        (root / "rel").symlink_to("../../../.." + str(host))
        (root / "loop").symlink_to("loop")
        (volume / "b").symlink_to(str(host))  # an absolute link inside a bind source
        hostfile = Path(tmp, "file")
        hostfile.write_text("")
        spec: dict[str, Any] = {"mounts": []}
        for parts, kind in mounts:
            m: dict[str, Any] = {"destination": "/" + "/".join(parts), "type": kind}
            if kind.startswith("bind"):
                m = {**m, "type": "bind", "source": str(volume if kind == "bind-dir" else hostfile)}
            spec["mounts"].append(m)
        before_host, before_volume = snapshot(host), snapshot(volume)
        try:
            plan = prepare(spec, root, PROVIDED_BY_LXC)
        except errdefs.InvalidArgument:
            plan = None
        assert snapshot(host) == before_host
        # A bind source may gain mount points, but only directories and empty files.
        for rel, (kind, content) in snapshot(volume).items():
            if rel not in before_volume:
                assert kind in (stat.S_IFDIR, stat.S_IFREG) and content == b""
        if plan is None:
            return
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
        try:
            for target in plan.mounts.values():
                assert ".." not in target.path.split("/") and target.path.startswith("/")
                if not target.create and rootpath.have_openat2():
                    # Made in the image or a bind source, or below an opaque mount: never
                    # through a symlink of the image.
                    try:
                        os.close(rootpath.openat2(root_fd, target.path, os.O_PATH,
                                                  rootpath.RESOLVE_IN_ROOT
                                                  | rootpath.RESOLVE_NO_SYMLINKS))
                    except OSError as e:
                        # Inside a bind source or a later-mounted filesystem: not in the image.
                        assert e.errno in (errno.ENOENT, errno.ENOTDIR)  # never ELOOP
        finally:
            os.close(root_fd)
