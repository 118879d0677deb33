"""Containers as kubelet runs them: containerd's CRI plugin, driven over gRPC like kubelet,
with a CNI bridge, for the project's handler (packaging/containerd-runtime.toml) and runc's.

Every test runs once per handler with the same assertions, so each pins runc-equal behaviour:
pod and container lifecycle, the container log, ExecSync, container and pod statistics,
UpdateContainerResources, cgroup placement under the pod's cgroup (kubelet's cgroupfs driver),
a stop with a grace period, an OOM kill, and a containerd restart.

One private containerd for the module, in a network namespace of its own (the CNI bridge and
subnet stay there); the pods' cgroup parent is a unique top-level cgroup, removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from protos.cri.v1 import api_pb2 as cri
from tests.harness.containerd import CNI_BIN, PrivateContainerd, packaged_handler
from tests.harness.cri import CriClient, cri_containerd, kv
from tests.harness.fixtures import BusyboxImage
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.integration

OURS, _ = packaged_handler()
HANDLERS = ["runc", OURS]
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class World:
    ctd: PrivateContainerd
    cri: CriClient
    image: str
    #: The pods' cgroup parent below every hierarchy's root (kubelet's /kubepods).
    parent: str

    @property
    def logs(self) -> Path:
        return self.ctd.folder / "pod-logs"

    @property
    def slice(self) -> str:
        """The top slice of the pods made with the systemd driver's names."""
        return self.parent.replace("-", "") + ".slice"


def _rmdir_tree(top: Path) -> None:
    if not top.is_dir():
        return
    for d in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        top.rmdir()


@pytest.fixture(scope="module")
def world(busybox_image: BusyboxImage, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    if not Path(CNI_BIN, "bridge").exists():
        pytest.skip("CNI plugins missing (Debian containernetworking-plugins; make setup)")
    parent = f"lxcri-cri-{uuid.uuid4().hex[:8]}"
    try:
        with cri_containerd(tmp_path_factory.mktemp("cri"), busybox_image.tar) as (ctd, client):
            yield World(ctd, client, busybox_image.ref, parent)
    finally:
        for hierarchy in CGROUP_ROOT.iterdir():
            _rmdir_tree(hierarchy / parent)
            _rmdir_tree(hierarchy / (parent.replace("-", "") + ".slice"))


@dataclass
class Pod:
    id: str
    config: cri.PodSandboxConfig
    #: Its cgroup below the roots, as kubelet names it with the cgroupfs driver.
    cgroup: str


@contextlib.contextmanager
def pod(world: World, handler: str, systemd: bool = False) -> Iterator[Pod]:
    """A pod whose cgroup kubelet would name with the cgroupfs driver, or, with ``systemd``,
    with the systemd driver: a slice, for which containerd's CRI plugin gives the containers
    the cgroupsPath ``<pod slice>:cri-containerd:<id>``."""
    uid = uuid.uuid4().hex[:12]
    name = f"p-{uid[:6]}"
    cgroup = f"{world.parent}/pod{uid}"
    if systemd:
        top = world.slice.removesuffix(".slice")
        cgroup = (f"{top}.slice/{top}-besteffort.slice/"
                  f"{top}-besteffort-pod{uid}.slice")
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=uid, namespace="lxcri-test"),
        hostname=name, log_directory=str(world.logs / f"lxcri-test_{name}_{uid}"),
        linux=cri.LinuxPodSandboxConfig(
            cgroup_parent=f"/{cgroup}",
            security_context=cri.LinuxSandboxSecurityContext(
                namespace_options=cri.NamespaceOption(
                    network=cri.POD, pid=cri.CONTAINER, ipc=cri.POD))))
    pod_id = world.cri.run_pod(config, handler)
    try:
        yield Pod(pod_id, config, cgroup)
    finally:
        with contextlib.suppress(Exception):
            world.cri.stop_pod(pod_id)
        with contextlib.suppress(Exception):
            world.cri.remove_pod(pod_id)


def container(world: World, p: Pod, *argv: str, name: str = "c",
              resources: cri.LinuxContainerResources | None = None, start: bool = True) -> str:
    config = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=name), image=cri.ImageSpec(image=world.image),
        command=list(argv), envs=kv(GREETING="hello"), log_path=f"{name}/0.log",
        linux=cri.LinuxContainerConfig(
            resources=resources or cri.LinuxContainerResources(),
            security_context=cri.LinuxContainerSecurityContext(
                namespace_options=cri.NamespaceOption(
                    network=cri.POD, pid=cri.CONTAINER, ipc=cri.POD))))
    cid = world.cri.create(p.id, config, p.config)
    if start:
        world.cri.start(cid)
    return cid


def exited(world: World, cid: str, timeout: float = 30.0) -> cri.ContainerStatus:
    wait_for(lambda: world.cri.status(cid).status.state == cri.CONTAINER_EXITED,
             timeout=timeout, what=f"container {cid} to exit")
    return world.cri.status(cid).status


def log_lines(world: World, p: Pod, name: str = "c") -> list[tuple[str, str]]:
    """(stream, text) of each line of the container's CRI log."""
    path = Path(p.config.log_directory) / name / "0.log"
    out = []
    for line in path.read_text().splitlines():
        _ts, stream, _tag, text = line.split(" ", 3)
        out.append((stream, text))
    return out


def cgroup_file(p: Pod, cid: str, controller: str, name: str) -> Path:
    return CGROUP_ROOT / controller / p.cgroup / cid / name


# -- lifecycle, logs, exec --------------------------------------------------------------------


@pytest.mark.parametrize("handler", HANDLERS)
def test_pod_and_container_lifecycle_and_log(world: World, handler: str) -> None:
    with pod(world, handler) as p:
        status = world.cri.pod_status(p.id).status
        assert status.state == cri.SANDBOX_READY and status.runtime_handler == handler
        prefix = world.ctd.pod_subnet.rsplit(".", 1)[0] + "."
        assert status.network.ip.startswith(prefix), (status.network, prefix)
        cid = container(world, p, "sh", "-c", 'echo "out $GREETING"; echo err >&2; exit 3')
        st = exited(world, cid)
        assert (st.exit_code, st.reason) == (3, "Error")
        assert st.started_at > 0 and st.finished_at > 0
        wait_for(lambda: len(log_lines(world, p)) >= 2, what="both log lines")
        assert sorted(log_lines(world, p)) == [("stderr", "err"), ("stdout", "out hello")]
        world.cri.remove(cid)
        with pytest.raises(Exception, match="not found|does not exist"):
            world.cri.status(cid)


@pytest.mark.parametrize("handler", HANDLERS)
def test_exec_sync(world: World, handler: str) -> None:
    with pod(world, handler) as p:
        cid = container(world, p, "sleep", "60")
        r = world.cri.exec_sync(cid, ["sh", "-c", "echo hi; echo oops >&2; exit 4"])
        assert (r.stdout, r.stderr, r.exit_code) == (b"hi\n", b"oops\n", 4)
        r = world.cri.exec_sync(cid, ["hostname"])
        assert r.stdout.decode().strip() == p.config.hostname


@pytest.mark.parametrize("handler", HANDLERS)
def test_a_missing_program_fails_the_task_create_and_leaves_no_cgroup(world: World,
                                                                      handler: str) -> None:
    """containerd 1.6's CRI makes the task (the shim's Create) in StartContainer. runc's
    create runs its init's set-up up to the program's lookup, so that Create fails, naming
    the program, before anything runs, and leaves no cgroup in the pod's (the other set-up
    errors: tests/integration/test_create_errors.py)."""
    with pod(world, handler) as p:
        pod_cgroup = CGROUP_ROOT / "memory" / p.cgroup
        before = sorted(d.name for d in pod_cgroup.iterdir() if d.is_dir())
        cid = container(world, p, "nosuch", start=False)
        with pytest.raises(Exception, match=r"failed to create shim task: .*"
                           r'exec: \\?"nosuch\\?": executable file not found in \$PATH'):
            world.cri.start(cid)
        assert sorted(d.name for d in pod_cgroup.iterdir() if d.is_dir()) == before
        assert world.cri.status(cid).status.state != cri.CONTAINER_RUNNING
        world.cri.remove(cid)


# -- cgroups: placement, statistics, updates ------------------------------------------------


@pytest.mark.parametrize("handler", HANDLERS)
def test_containers_live_in_the_pods_cgroup(world: World, handler: str) -> None:
    with pod(world, handler) as p:
        cid = container(world, p, "sleep", "60")
        procs = cgroup_file(p, cid, "memory", "cgroup.procs").read_text().split()
        assert procs, "the container's cgroup holds its processes"
        for hierarchy in ("memory", "cpu", "pids", "unified"):
            assert (CGROUP_ROOT / hierarchy / p.cgroup / cid).is_dir(), hierarchy
        world.cri.stop(cid, timeout=0)
        world.cri.remove(cid)
        wait_for(lambda: not (CGROUP_ROOT / "memory" / p.cgroup / cid).exists(),
                 what="the container's own cgroup to go")
        # The pod's cgroup is kubelet's (here: the sandbox's parent): it stays.
        assert (CGROUP_ROOT / "memory" / p.cgroup).is_dir()


def test_systemd_slice_names_on_a_host_without_systemd(world: World) -> None:
    # kubeadm's default (systemd) driver names a pod's cgroup as a slice; runc would ask
    # systemd for a scope, and fails where systemd is not running (as here). This runtime
    # makes the cgroup systemd would have made: <slice hierarchy>/cri-containerd-<id>.scope.
    with pod(world, OURS, systemd=True) as p:
        cid = container(world, p, "sleep", "60")
        scope = CGROUP_ROOT / "memory" / p.cgroup / f"cri-containerd-{cid}.scope"
        assert (scope / "cgroup.procs").read_text().split(), scope
        # containerd reads the pod's figures from the slice (its cgroup_parent).
        assert world.cri.pod_stats(p.id).linux.memory.usage_bytes.value > 0
        world.cri.stop(cid, timeout=0)
        world.cri.remove(cid)
        wait_for(lambda: not scope.exists(), what="the scope to go")
        assert scope.parent.is_dir()


@pytest.mark.parametrize("handler", HANDLERS)
def test_container_and_pod_stats(world: World, handler: str) -> None:
    with pod(world, handler) as p:
        # 4 MB in the pod's shared memory (tmpfs: charged to the writer's memory cgroup and
        # kept on the anonymous LRU, so it is part of the working set).
        cid = container(world, p, "sh", "-c", "head -c 4000000 /dev/zero > /dev/shm/ballast; "
                        "sleep 60")
        wait_for(lambda: world.cri.container_stats(cid).memory.working_set_bytes.value
                 > 4_000_000, what="the container's memory to show in its stats")
        stats = world.cri.container_stats(cid)
        assert stats.attributes.id == cid
        assert stats.cpu.usage_core_nano_seconds.value > 0
        # The pod's figures are its cgroup's (the parent of the sandbox's and the
        # containers'), so they include the container's.
        pod_stats = world.cri.pod_stats(p.id)
        assert pod_stats.attributes.id == p.id
        assert pod_stats.linux.memory.working_set_bytes.value > 4_000_000
        assert pod_stats.linux.cpu.usage_core_nano_seconds.value > 0
        assert cid in [c.attributes.id for c in pod_stats.linux.containers]


@pytest.mark.parametrize("handler", HANDLERS)
def test_update_container_resources(world: World, handler: str) -> None:
    with pod(world, handler) as p:
        cid = container(world, p, "sleep", "60", resources=cri.LinuxContainerResources(
            memory_limit_in_bytes=32 << 20, cpu_shares=512))
        assert cgroup_file(p, cid, "memory", "memory.limit_in_bytes").read_text() == \
            f"{32 << 20}\n"
        # Raising memory (and with it memory+swap, which CRI sets to the same value) and the
        # CPU limits of a running container: kubelet's in-place resize.
        world.cri.update(cid, cri.LinuxContainerResources(
            memory_limit_in_bytes=64 << 20, cpu_shares=256, cpu_quota=20000,
            cpu_period=100000))
        assert cgroup_file(p, cid, "memory", "memory.limit_in_bytes").read_text() == \
            f"{64 << 20}\n"
        assert cgroup_file(p, cid, "cpu", "cpu.shares").read_text() == "256\n"
        assert cgroup_file(p, cid, "cpu", "cpu.cfs_quota_us").read_text() == "20000\n"
        # And lowering it again.
        world.cri.update(cid, cri.LinuxContainerResources(memory_limit_in_bytes=16 << 20))
        assert cgroup_file(p, cid, "memory", "memory.limit_in_bytes").read_text() == \
            f"{16 << 20}\n"
        assert world.cri.status(cid).status.state == cri.CONTAINER_RUNNING


# -- stop, OOM, restart -----------------------------------------------------------------------


@pytest.mark.parametrize("handler", ["runc", OURS])
def test_stop_waits_for_a_term_trap_within_the_grace_period(world: World, handler: str) -> None:
    with pod(world, handler) as p:
        cid = container(world, p, "sh", "-c",
                        "trap 'sleep 3; echo cleaned up; exit 0' TERM; echo ready; "
                        "while true; do sleep 0.1; done")
        wait_for(lambda: ("stdout", "ready") in log_lines(world, p), what="the trap to be set")
        began = time.monotonic()
        world.cri.stop(cid, timeout=15)
        elapsed = time.monotonic() - began
        st = world.cri.status(cid).status
        assert (st.exit_code, st.reason) == (0, "Completed"), (st.exit_code, st.reason)
        assert 3 <= elapsed < 15, elapsed
        assert ("stdout", "cleaned up") in log_lines(world, p)


@pytest.mark.parametrize("handler", HANDLERS)
def test_oom_kill_is_reported_as_oomkilled(world: World, handler: str) -> None:
    with pod(world, handler) as p:
        cid = container(world, p, "tail", "/dev/zero",
                        resources=cri.LinuxContainerResources(memory_limit_in_bytes=32 << 20))
        st = exited(world, cid, timeout=60)
        # The CRI plugin handles the shim's TaskOOM and TaskExit events in turn; under load the
        # reason may be set a moment after the exit is (runc's shim as much as ours).
        wait_for(lambda: world.cri.status(cid).status.reason == "OOMKilled", timeout=10,
                 what=f"reason OOMKilled (exit code {st.exit_code}, reason {st.reason!r})")
        assert world.cri.status(cid).status.exit_code == 137


@pytest.mark.parametrize("handler", HANDLERS)
def test_containers_survive_a_containerd_restart(world: World, handler: str) -> None:
    with pod(world, handler) as p:
        cid = container(world, p, "sleep", "120")
        world.ctd.restart()
        wait_for(lambda: _answers(world), what="the CRI plugin to answer again")
        assert world.cri.status(cid).status.state == cri.CONTAINER_RUNNING
        assert world.cri.pod_status(p.id).status.state == cri.SANDBOX_READY
        assert world.cri.exec_sync(cid, ["echo", "still here"]).stdout == b"still here\n"
        world.cri.stop(cid, timeout=0)
        assert exited(world, cid).exit_code == 137


def _answers(world: World) -> bool:
    try:
        world.cri.version()
        return True
    except Exception:
        return False


def test_the_shims_inherit_containerds_network_namespace(world: World) -> None:
    # The harness's promise: the CNI bridge is not on this machine's own network.
    own = os.readlink("/proc/self/ns/net")
    assert world.ctd.pid is not None
    assert os.readlink(f"/proc/{world.ctd.pid}/ns/net") != own
