"""A hostile image or spec through the real LXC backend: device nodes and mount points stay
inside the rootfs whatever the image's symlinks (runc's behaviour: the link is followed inside
the rootfs), the container cannot raise its own cgroup limits, and /sys and /dev carry the
spec's nosuid, nodev, noexec (issue 12, items 3-6).

Each test has its own temp dirs ("the host" directory the image's links point at) and deletes
what it made even when it fails (the ``env`` fixture of test_lxc_backend).
"""

from __future__ import annotations

import asyncio
import dataclasses
import stat
from pathlib import Path
from typing import Any

import pytest

from runtime import cgroups, errdefs
from runtime.lxc.mount import mount_all, mounted_under, unmount_all
from runtime.types import Mount
from tests.integration import test_lxc_backend
from tests.integration.test_lxc_backend import Env, run_and_read
from tests.unit.lxc.test_rootpath import snapshot

pytestmark = test_lxc_backend.pytestmark
#: The fixtures of test_lxc_backend: a busybox rootfs, and one test's world.
busybox = test_lxc_backend.busybox
env = test_lxc_backend.env


def hostile_config(env: Env, host: Path, script: str, **spec: Any) -> Any:
    """A bundle whose own rootfs (root.path) holds ``evil -> <host>`` (absolute) and
    ``rel -> ../../../../../<host>`` (relative, climbing past the root)."""
    cfg = env.config(["sh", "-c", script], mount=False, **spec)
    rootfs = env.bundle / "rootfs"
    (rootfs / "evil").symlink_to(host)
    (rootfs / "rel").symlink_to("../../../../../.." + str(host))
    return cfg


@pytest.fixture
def host(env: Env) -> Path:
    """The host directory the image's links point at, with a file that must survive."""
    d = env.base / "host-dir"
    d.mkdir()
    (d / "node").write_text("precious\n")
    return d


@pytest.mark.asyncio
async def test_a_device_through_an_image_link_is_made_inside_the_rootfs(
        env: Env, host: Path) -> None:
    inner = str(host)  # where the link leads inside the container, like runc
    cfg = hostile_config(env, host, f"stat -c '%F %t:%T %a' /evil/node {inner}/node")
    cfg.spec["linux"]["devices"] = [{"path": "/evil/node", "type": "c", "major": 1,
                                     "minor": 3, "fileMode": 0o666}]
    before = snapshot(host)
    try:
        out = await run_and_read(env, cfg)
    finally:
        assert snapshot(host) == before  # the host's file is neither deleted nor replaced
    assert out.splitlines() == ["character special file 1:3 666"] * 2
    made = env.bundle / "rootfs" / inner.lstrip("/") / "node"
    assert stat.S_ISCHR(made.lstat().st_mode)


@pytest.mark.asyncio
async def test_mount_points_through_image_links_are_made_inside_the_rootfs(
        env: Env, host: Path) -> None:
    source = env.base / "hosts-file"
    source.write_text("127.0.0.1 box\n")
    inner = str(host)
    script = (f"grep -E ' {inner}/(mnt|hosts) ' /proc/mounts | cut -d' ' -f2; "
              f"cat /rel/hosts")
    cfg = hostile_config(env, host, script, mounts=[
        {"destination": "/evil/mnt", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/rel/hosts", "type": "bind", "source": str(source),
         "options": ["rbind", "ro"]}])
    before = snapshot(host)
    try:
        out = await run_and_read(env, cfg)
    finally:
        assert snapshot(host) == before  # no mount point on the host, even on failure
    lines = out.splitlines()
    assert sorted(lines[:2]) == [f"{inner}/hosts", f"{inner}/mnt"]
    assert lines[2] == "127.0.0.1 box"
    made = env.bundle / "rootfs" / inner.lstrip("/")
    assert (made / "mnt").is_dir() and (made / "hosts").is_file()


@pytest.mark.asyncio
@pytest.mark.parametrize("checkpointable", [False, True], ids=["entries", "mount-hook"])
async def test_image_links_at_mount_and_read_only_paths_lead_inside_like_runc(
        env: Env, host: Path, checkpointable: bool) -> None:
    # Ubuntu's /etc/resolv.conf is a dangling link into /run until systemd-resolved runs; CRI
    # and Docker bind a file onto it. LXC alone refused any link in a target ("was a symbolic
    # link"); runc mounts onto the link's in-root target.
    source = env.base / "resolv.conf"
    source.write_text("nameserver 192.0.2.1\n")
    cfg = hostile_config(env, host, "cat /etc/resolv.conf; touch /data/x 2>/dev/null || "
                                    "echo read-only; touch /srv/other/y && echo writable",
                         mounts=[{"destination": "/etc/resolv.conf", "type": "bind",
                                  "source": str(source), "options": ["rbind", "ro"]}])
    rootfs = env.bundle / "rootfs"
    (rootfs / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    (rootfs / "srv/data").mkdir(parents=True)
    (rootfs / "srv/other").mkdir()
    (rootfs / "data").symlink_to("/srv/data")
    cfg.spec["linux"]["readonlyPaths"] = ["/data"]
    if checkpointable:  # read-only paths are then binds made by the mount hook
        cfg = dataclasses.replace(cfg, checkpointable=True)
    before = snapshot(host)
    out = await run_and_read(env, cfg)
    assert out.splitlines() == ["nameserver 192.0.2.1", "read-only", "writable"]
    assert (rootfs / "run/systemd/resolve/stub-resolv.conf").is_file()
    assert snapshot(host) == before


@pytest.mark.asyncio
async def test_a_symlink_loop_in_a_mount_destination_is_a_clear_error(
        env: Env, host: Path) -> None:
    cfg = hostile_config(env, host, "true", mounts=[
        {"destination": "/loop/mnt", "type": "tmpfs", "source": "tmpfs"}])
    (env.bundle / "rootfs/loop").symlink_to("loop")
    with pytest.raises(errdefs.InvalidArgument,
                       match=r"mounts\[0\]\.destination: /loop/mnt: too many levels"):
        await env.create(cfg)
    assert snapshot(host) == {"node": (stat.S_IFREG, b"precious\n")}
    assert not (env.lxcpath / f"lxctest-{cfg.id}").exists()


@pytest.mark.asyncio
async def test_a_device_through_a_loop_fails_the_create(env: Env, host: Path) -> None:
    cfg = hostile_config(env, host, "true")
    (env.bundle / "rootfs/loop").symlink_to("loop")
    cfg.spec["linux"]["devices"] = [{"path": "/loop/node", "type": "p"}]
    with pytest.raises(errdefs.InvalidArgument,
                       match=r"linux.devices\[0\].path: /loop/node: too many levels"):
        await env.create(cfg)
    assert not (env.lxcpath / f"lxctest-{cfg.id}").exists()
    assert snapshot(host) == {"node": (stat.S_IFREG, b"precious\n")}


LIMITS = {"memory": {"limit": 64 * 1024 * 1024}, "pids": {"limit": 64}}
#: Tries to lift both limits from inside, on cgroup v1 (this host) or v2; prints what it sees.
RAISE = (
    "if [ -e /sys/fs/cgroup/memory.max ]; then m=/sys/fs/cgroup/memory.max; "
    "p=/sys/fs/cgroup/pids.max; else m=/sys/fs/cgroup/memory/memory.limit_in_bytes; "
    "p=/sys/fs/cgroup/pids/pids.max; fi; "
    "echo 9223372036854771712 2>/dev/null >$m && echo raised-memory; "
    "echo max 2>/dev/null >$p && echo raised-pids; cat $m $p")


async def limits_seen_from_inside(env: Env, mounts: list[dict[str, Any]]) -> tuple[str, str]:
    """(the container's output, the host's memory limit of that container), read while it
    still runs: it waits for a file the test makes once it has read the limit."""
    cfg = env.config(["true"], mounts=mounts, mount=False)
    tmp = env.bundle / "rootfs/tmp"
    out, done = tmp / f"{cfg.id}.out", tmp / f"{cfg.id}.done"
    cfg.spec["process"]["args"] = [
        "sh", "-c", f"({RAISE}) > /tmp/{cfg.id}.tmp 2>&1; mv /tmp/{cfg.id}.tmp /tmp/{cfg.id}.out;"
                    f" while [ ! -e /tmp/{cfg.id}.done ]; do sleep 0.05; done"]
    cfg.spec["linux"]["resources"] = LIMITS
    handle = await env.create(cfg)
    memory = cgroups.of_pid(handle.pid).path("memory")
    assert memory is not None and f"lxc.payload.{handle.name}" in str(memory)
    await handle.start()
    try:
        for _ in range(600):  # the script takes milliseconds; 30 s at most
            if out.exists():
                break
            await asyncio.sleep(0.05)
        limit = memory / ("memory.max" if (memory / "memory.max").exists()
                          else "memory.limit_in_bytes")
        return out.read_text(), limit.read_text().strip()
    finally:
        done.touch()
        assert await asyncio.wait_for(handle.wait(), 30) == 0


@pytest.mark.asyncio
async def test_a_container_cannot_raise_its_own_limits(env: Env) -> None:
    text, host = await limits_seen_from_inside(env, [])  # containerd's default: no mount
    assert "raised" not in text
    assert text.split() == [str(64 * 1024 * 1024), "64"]
    assert host == str(64 * 1024 * 1024)  # the limit the host enforces is unchanged
    cri = [{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}]
    text, host = await limits_seen_from_inside(env, cri)
    assert "raised" not in text and host == str(64 * 1024 * 1024)


@pytest.mark.asyncio
async def test_a_writable_cgroup_mount_lets_the_container_manage_its_cgroup(env: Env) -> None:
    rw = [{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
           "options": ["nosuid", "noexec", "nodev", "rw"]}]
    text, _ = await limits_seen_from_inside(env, rw)
    assert "raised-pids" in text  # asked for: cgroup:mixed, its own cgroup (v1)


CTR_MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs",
     "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
]
SHOW = "awk '$5 == \"/proc\" || $5 == \"/sys\" || $5 == \"/dev\" {print $5, $6}' " \
       "/proc/self/mountinfo"


def flags_of(out: str) -> dict[str, set[str]]:
    """The mount flags of the *top* mount of each path (the last line for it wins)."""
    found: dict[str, set[str]] = {}
    for line in out.splitlines():
        path, flags = line.split()
        found[path] = set(flags.split(","))
    return found


@pytest.mark.asyncio
@pytest.mark.parametrize("checkpointable", [False, True], ids=["entries", "mount-hook"])
async def test_proc_sys_and_dev_carry_the_specs_flags(env: Env, checkpointable: bool) -> None:
    cfg = env.config(["sh", "-c", SHOW + "; ls /dev/null /sys/kernel >/dev/null"],
                     mounts=CTR_MOUNTS)
    cfg.spec["linux"]["maskedPaths"] = ["/sys/firmware"]
    if checkpointable:
        cfg = dataclasses.replace(cfg, checkpointable=True)
    flags = flags_of(await run_and_read(env, cfg))
    assert {"ro", "nosuid", "nodev", "noexec"} <= flags["/sys"]
    assert {"nosuid", "nodev", "noexec"} <= flags["/proc"]
    assert "nosuid" in flags["/dev"] and "rw" in flags["/dev"]


def test_a_containerd_mount_target_through_an_image_link_stays_in_the_rootfs(
        env: Env, host: Path) -> None:
    # containerd may hand several mounts, later ones with a target inside the earlier ones
    # (the image): the target is resolved inside the rootfs, like containerd's fs.RootPath.
    image = env.base / "image"
    image.mkdir()
    (image / "evil").symlink_to(host)
    (image / str(host).lstrip("/")).mkdir(parents=True)
    extra = env.base / "extra"
    extra.mkdir()
    (extra / "from-extra").write_text("")
    rootfs = env.base / "rootfs-mnt"
    rootfs.mkdir()
    done = mount_all([Mount("bind", str(image), "", ("rbind", "rw")),
                      Mount("bind", str(extra), "/evil", ("rbind", "ro"))], rootfs)
    try:
        assert done[1] == str(rootfs / str(host).lstrip("/"))
        assert (rootfs / str(host).lstrip("/") / "from-extra").exists()
        assert not (host / "from-extra").exists() and mounted_under(host) == []
    finally:
        unmount_all(done)
    (image / "loop").symlink_to("loop")
    with pytest.raises(errdefs.InvalidArgument, match="'/loop': too many levels"):
        mount_all([Mount("bind", str(image), "", ("rbind", "rw")),
                   Mount("bind", str(extra), "/loop", ("rbind", "ro"))], rootfs)
    assert mounted_under(rootfs) == []
