"""The Proxmox VE backend end to end: ``ctr run --runtime io.containerd.proxmox.v2`` with a
configuration whose ``[backend] type = "proxmox"``, against the Proxmox stand-in
(tests/pvestandin: the API from Proxmox's schema, CTs on real LXC, ``local-zfs`` on zfs-fuse).

What a user sees: the program's output and exit status through ctr, the CT in the Proxmox API
(its VMID, running, stopped, gone), exec and stats through ctr, and after every failure a clear
error and nothing left in the stand-in. The image template CT (the node's image cache,
runtime/proxmox/rootfs.py) is the only thing that stays, on purpose.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import PROXMOX_RUNTIME, BusyboxImage
from tests.harness.zfs import zfs_fuse_fixture  # noqa: F401
from tests.pvestandin.fixture import StandInHandle, pve_standin_fixture  # noqa: F401

pytestmark = pytest.mark.integration


@dataclass
class Pve:
    ctd: PrivateContainerd
    pve: StandInHandle
    config: Path
    image: str

    def run(self, id: str, *args: str, detach: bool = False, check: bool = True,
            annotations: dict[str, str] | None = None, config: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        flags = ["-d"] if detach else ["--rm"]
        for k, v in (annotations or {}).items():
            flags += ["--annotation", f"{k}={v}"]
        return self.ctd.ctr("run", *flags, "--runtime", PROXMOX_RUNTIME,
                            "--runtime-config-path", str(config or self.config), self.image,
                            id, *args, check=check, timeout=timeout)

    def api(self, method: str, path: str, **kw: Any) -> Any:
        r = requests.request(method, f"{self.pve.url}{path}", verify=self.pve.ca_file,
                             headers={"Authorization": self.pve.auth_header()}, timeout=30,
                             **kw)
        r.raise_for_status()
        return r.json()["data"]

    def cts(self) -> dict[int, dict[str, Any]]:
        """The CTs the API lists, templates (the image cache) left out."""
        return {int(c["vmid"]): c for c in self.api("GET", f"/nodes/{self.pve.node}/lxc")
                if str(c.get("template", 0)) != "1"}

    def ct_of(self, id: str) -> tuple[int, dict[str, Any]] | None:
        for vmid, c in self.cts().items():
            conf = self.api("GET", f"/nodes/{self.pve.node}/lxc/{vmid}/config")
            if f"container {id}" in conf.get("description", ""):
                return vmid, c
        return None

    def ct_file(self, vmid: int, name: str) -> str:
        """A file of the CT's rootfs volume, read on the node (the stand-in's ZFS dataset)."""
        conf = self.api("GET", f"/nodes/{self.pve.node}/lxc/{vmid}/config")
        volume = conf["rootfs"].split(",")[0].split("/")[-1]
        out = subprocess.run(["zfs", "list", "-H", "-o", "name,mountpoint"],
                             capture_output=True, text=True, check=True).stdout
        mountpoint = next(line.split("\t")[1] for line in out.splitlines()
                          if line.split("\t")[0].endswith("/" + volume))
        return Path(mountpoint, name).read_text()

    def leftovers(self) -> list[str]:
        """The stand-in's leftovers, the image templates and their base volumes aside."""
        templates = {str(v) for v, c in
                     ((int(c["vmid"]), c) for c in self.api("GET", f"/nodes/{self.pve.node}/lxc"))
                     if str(c.get("template", 0)) == "1"}
        return [x for x in self.pve.leftovers()
                if not any(x == f"CT {t}" or f"basevol-{t}-" in x for t in templates)]

    def wait_status(self, id: str, status: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.ctd.task_status(id) != status:
            assert time.monotonic() < deadline, f"{id} never became {status}"
            time.sleep(0.05)


def write_config(pve: StandInHandle, folder: Path, **extra: str) -> Path:
    secret = folder / "pve-token"
    secret.write_text(pve.token_secret + "\n")
    os.chmod(secret, 0o600)
    node = pve.standin.node
    assert node is not None
    lower, upper = pve.standin.opts.nextid_range
    lines = ['[backend]', 'type = "proxmox"', '', '[proxmox]',
             f'url = "{pve.url.removesuffix("/api2/json")}"', f'node = "{pve.node}"',
             f'token_id = "{pve.token_id}"',
             f'token_secret_file = "{secret}"', f'ca_file = "{pve.ca_file}"',
             'storage = "local-zfs"', f'conf_dir = "{node.conf_dir}"',
             f'lxcpath = "{node.lxc.lxcpath}"', f'vmid_range = [{lower}, {upper}]',
             'rootfs_size = 1', 'request_timeout = 10', 'task_timeout = 60']
    lines += [f"{k} = {v}" for k, v in extra.items()]
    config = folder / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


@pytest.fixture
def env(containerd: PrivateContainerd, busybox_image: BusyboxImage,
        pve_standin: StandInHandle, tmp_path: Path) -> Iterator[Pve]:
    e = Pve(containerd, pve_standin, write_config(pve_standin, tmp_path), busybox_image.ref)
    before = set(containerd.ctr("containers", "ls", "-q").stdout.split())
    yield e
    for cid in set(containerd.ctr("containers", "ls", "-q").stdout.split()) - before:
        containerd.remove_container(cid)


# -- run --------------------------------------------------------------------------------------


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_run_rm_prints_output_and_exit_status(env: Pve, unique_id: str) -> None:
    r = env.run(f"{unique_id}-0", "echo", "hello from a proxmox CT")
    assert r.stdout == "hello from a proxmox CT\n"
    r = env.run(f"{unique_id}-7", "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert (r.returncode, r.stdout, r.stderr.strip().splitlines()[-1:]) == (7, "out\n", ["err"])
    r = env.run(f"{unique_id}-9", "sh", "-c", "kill -9 $$", check=False)
    assert r.returncode == 137
    assert env.cts() == {}
    assert env.leftovers() == []


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_detached_ct_is_in_the_api_running_then_stopped_then_gone(env: Pve,
                                                                   unique_id: str) -> None:
    env.run(unique_id, "sleep", "300", detach=True)
    env.wait_status(unique_id, "RUNNING")
    found = env.ct_of(unique_id)
    assert found is not None, env.cts()
    vmid, ct = found
    assert ct["status"] == "running"
    pid = int(env.ctd.ctr("task", "ls").stdout.split(unique_id)[1].split()[0])
    assert ct["pid"] == pid, "the task's PID is the CT's init, as the API reports it"
    conf = env.api("GET", f"/nodes/{env.pve.node}/lxc/{vmid}/config")
    assert conf["onboot"] == 0 and "containerd" in conf["tags"]
    assert f"namespace default, container {unique_id}" in conf["description"]
    assert conf["rootfs"].startswith("local-zfs:basevol-"), "a linked clone of the template"
    env.ctd.ctr("task", "kill", "-s", "SIGKILL", unique_id)
    env.wait_status(unique_id, "STOPPED")
    deadline = time.monotonic() + 30
    while env.cts().get(vmid, {}).get("status") != "stopped":
        assert time.monotonic() < deadline, env.cts()
        time.sleep(0.1)
    env.ctd.ctr("task", "rm", unique_id)
    env.ctd.ctr("container", "rm", unique_id)
    assert vmid not in env.cts()
    assert env.leftovers() == []


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_exec_stats_pause_resume(env: Pve, unique_id: str) -> None:
    env.run(unique_id, "sleep", "300", detach=True)
    env.wait_status(unique_id, "RUNNING")
    r = env.ctd.ctr("task", "exec", "--exec-id", "e1", unique_id, "sh", "-c",
                    "echo in $(hostname); exit 3", check=False)
    assert (r.returncode, r.stdout) == (3, f"in {unique_id}\n")
    metrics = env.ctd.ctr("task", "metrics", unique_id).stdout
    assert "memory" in metrics.lower() or "pids" in metrics.lower(), metrics
    env.ctd.ctr("task", "pause", unique_id)
    env.wait_status(unique_id, "PAUSED")
    env.ctd.ctr("task", "resume", unique_id)
    env.wait_status(unique_id, "RUNNING")
    env.ctd.ctr("task", "kill", "-s", "SIGKILL", unique_id)
    env.wait_status(unique_id, "STOPPED")


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_vlan_annotation_reaches_net0(env: Pve, unique_id: str) -> None:
    env.run(unique_id, "sleep", "300", detach=True,
            annotations={"lxcri.proxmox.io/vlan": "42"})
    env.wait_status(unique_id, "RUNNING")
    found = env.ct_of(unique_id)
    assert found is not None
    conf = env.api("GET", f"/nodes/{env.pve.node}/lxc/{found[0]}/config")
    assert "tag=42" in conf["net0"].split(","), conf["net0"]
    assert "bridge=vmbr0" in conf["net0"].split(",")


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_ten_concurrent_creates_get_ten_vmids(env: Pve, unique_id: str) -> None:
    import concurrent.futures

    ids = [f"{unique_id}-{i}" for i in range(10)]
    env.run(f"{unique_id}-warm", "true")  # the image template first: not what is measured
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: env.run(i, "sleep", "300", detach=True,
                                                   timeout=300), ids))
    assert all(r.returncode == 0 for r in results)
    vmids = set()
    for i in ids:
        env.wait_status(i, "RUNNING", timeout=120)
        found = env.ct_of(i)
        assert found is not None
        vmids.add(found[0])
    assert len(vmids) == 10
    lower, upper = env.pve.standin.opts.nextid_range
    assert all(lower <= v <= upper for v in vmids)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:  # not one by one in the teardown
        list(pool.map(lambda i: env.ctd.remove_container(i, timeout=120), ids))
    assert env.leftovers() == []


# -- failures: a clear error naming the CT and the call, and nothing left ------------------


ALL_PRIVS = frozenset({
    "VM.Allocate", "VM.Clone", "VM.Config.CPU", "VM.Config.Disk", "VM.Config.Memory",
    "VM.Config.Network", "VM.Config.Options", "VM.Config.HWType", "VM.Config.Cloudinit",
    "VM.PowerMgmt", "VM.Audit", "VM.Console", "VM.Monitor", "VM.Snapshot",
    "VM.Snapshot.Rollback", "VM.Backup", "VM.Migrate", "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate", "Datastore.Allocate", "Datastore.Audit", "Sys.Audit",
    "Sys.Modify", "Sys.Console", "Sys.PowerMgmt", "SDN.Use", "SDN.Audit", "Pool.Allocate",
    "Pool.Audit", "Sys.AccessNetwork"})


def failing_run(env: Pve, id: str, config: Path | None = None) -> str:
    r = env.run(id, "echo", "never", check=False, config=config, timeout=180)
    assert r.returncode != 0 and "never" not in r.stdout
    return r.stderr


def warm(env: Pve, unique_id: str) -> None:
    """The image template exists (the failure then hits the container's own calls)."""
    env.run(f"{unique_id}-warm", "true")


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_401_names_the_call(env: Pve, unique_id: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    config = write_config(env.pve, bad)
    (bad / "pve-token").write_text("00000000-0000-0000-0000-000000000000\n")
    err = failing_run(env, unique_id, config)
    assert "401" in err and "/nodes/{node}/lxc" in err and "token" in err, err
    assert env.pve.token_secret not in err
    assert env.leftovers() == []


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_403_names_the_missing_privilege(env: Pve, unique_id: str) -> None:
    warm(env, unique_id)
    auth = env.pve.standin.api.auth
    name = env.pve.token_id
    auth.token_privs[name] = ALL_PRIVS - {"VM.Allocate"}
    try:
        err = failing_run(env, unique_id)
    finally:
        del auth.token_privs[name]
    assert "403" in err and "lacks privilege VM.Allocate" in err and "/clone" in err, err
    assert env.leftovers() == []


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_500_on_start_removes_the_ct(env: Pve, unique_id: str) -> None:
    from tests.pvestandin.app import Fault

    warm(env, unique_id)
    env.pve.standin.api.faults.append(Fault("POST", r".*/status/start$", 500,
                                            "something broke in pvedaemon"))
    err = failing_run(env, unique_id)
    assert "POST /nodes/{node}/lxc/{vmid}/status/start: 500: something broke" in err, err
    assert "CT " in err
    assert env.leftovers() == []


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_failed_task_reports_its_exitstatus(env: Pve, unique_id: str) -> None:
    warm(env, unique_id)
    node = env.pve.standin.node
    assert node is not None
    node.inject_task_failure("vzstart", "apparmor said no")
    err = failing_run(env, unique_id)
    assert "task vzstart failed" in err and "apparmor said no" in err, err
    assert env.leftovers() == []


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_held_lock_on_the_template(env: Pve, unique_id: str) -> None:
    warm(env, unique_id)
    node = env.pve.standin.node
    assert node is not None
    templates = [int(c["vmid"]) for c in env.api("GET", f"/nodes/{env.pve.node}/lxc")
                 if str(c.get("template", 0)) == "1"]
    conf = node.conf_dir / f"{templates[0]}.conf"
    text = conf.read_text()
    conf.write_text(text.replace("template: 1\n", "lock: backup\ntemplate: 1\n"))
    try:
        err = failing_run(env, unique_id)
    finally:
        conf.write_text(text)
    assert "CT is locked (backup)" in err and "a held lock" in err, err
    assert env.leftovers() == []


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_task_timeout_stops_the_task_and_removes_the_ct(env: Pve, unique_id: str,
                                                        tmp_path: Path) -> None:
    warm(env, unique_id)
    node = env.pve.standin.node
    assert node is not None
    short = tmp_path / "short"
    short.mkdir()
    config = write_config(env.pve, short)
    config.write_text(config.read_text().replace("task_timeout = 60", "task_timeout = 3"))
    node.tasks.hold.add("vzstart")
    try:
        err = failing_run(env, unique_id, config)
    finally:
        node.tasks.hold.discard("vzstart")
    assert "still running after 3s" in err and "start" in err, err
    assert env.leftovers() == []


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_unreachable_and_tls_failures(env: Pve, unique_id: str, tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    down = tmp_path / "down"
    down.mkdir()
    config = write_config(env.pve, down)
    config.write_text(config.read_text().replace(
        env.pve.url.removesuffix("/api2/json"), f"https://127.0.0.1:{port}"))
    err = failing_run(env, f"{unique_id}-u", config)
    assert "unreachable" in err and f"127.0.0.1:{port}" in err, err
    tls = tmp_path / "tls"
    tls.mkdir()
    config = write_config(env.pve, tls)
    config.write_text(config.read_text().replace(env.pve.ca_file,
                                                 "/etc/ssl/certs/ca-certificates.crt"))
    err = failing_run(env, f"{unique_id}-t", config)
    assert "TLS failure" in err, err
    assert env.leftovers() == []


# -- a shim that dies ------------------------------------------------------------------------


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_killed_shim_loses_no_exit_status(fresh_containerd: PrivateContainerd,
                                          busybox_image: BusyboxImage,
                                          pve_standin: StandInHandle, tmp_path: Path,
                                          unique_id: str) -> None:
    """containerd stopped, the shim killed: the program outlives its shim (the CT's init is
    not the shim's child) and records its status in the shim's directory; the ``delete``
    action (what containerd runs for a dead shim when it starts again) reports it and removes
    the CT."""
    import signal

    from protos.containerd.task.v2 import shim_pb2

    ctd = fresh_containerd
    e = Pve(ctd, pve_standin, write_config(pve_standin, tmp_path), busybox_image.ref)
    e.run(unique_id, "sh", "-c", "sleep 3; exit 7", detach=True)
    e.wait_status(unique_id, "RUNNING")
    found = e.ct_of(unique_id)
    assert found is not None
    vmid = found[0]
    shim = ctd.shim_pid(unique_id)
    assert shim is not None
    # containerd down first: a running containerd would clean up after the dead shim at once
    # and kill the program (137), as it does for runc's shim.
    ctd.stop()
    os.kill(shim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while e.cts().get(vmid, {}).get("status") != "stopped":
        assert time.monotonic() < deadline, "the program ends by itself, shim or not"
        time.sleep(0.1)
    bundle = ctd.bundle_dir(unique_id)
    r = subprocess.run(
        ["containerd-shim-proxmox-v2", "-namespace", ctd.namespace, "-address", ctd.address,
         "-publish-binary", "/usr/bin/containerd", "-id", unique_id, "-bundle", str(bundle),
         "delete"], cwd=bundle, env=ctd.env, capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert shim_pb2.DeleteResponse.FromString(r.stdout).exit_status == 7
    assert vmid not in e.cts()
    ctd.start()
    ctd.ctr("task", "rm", unique_id, check=False)
    ctd.ctr("container", "rm", unique_id, check=False)
    assert e.leftovers() == []


# -- checkpoints -----------------------------------------------------------------------------


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_checkpoint_retention_and_rollback_to_the_newest(env: Pve, unique_id: str) -> None:
    import asyncio

    from runtime.proxmox import checkpoints, settings
    from runtime.proxmox.api import PveApi

    env.run(unique_id, "sh", "-c", "echo one > /f; exec sleep 300", detach=True)
    env.wait_status(unique_id, "RUNNING")
    found = env.ct_of(unique_id)
    assert found is not None
    vmid = found[0]
    s = settings.parse(__import__("tomllib").loads(env.config.read_text()))

    async def drive() -> None:
        api = PveApi(s)
        try:
            first = await checkpoints.take(api, vmid, keep=2)
            env.ctd.ctr("task", "exec", "--exec-id", "w2", unique_id, "sh", "-c",
                        "echo two > /f")
            second = await checkpoints.take(api, vmid, keep=2)
            third = await checkpoints.take(api, vmid, keep=2)
            names = [c.name for c in await checkpoints.list_checkpoints(api, vmid)]
            assert names == [second, third] and first not in names, names
            env.ctd.ctr("task", "exec", "--exec-id", "w3", unique_id, "sh", "-c",
                        "echo three > /f")
            try:
                await checkpoints.rollback(api, vmid, third)
                raise AssertionError("rollback of a running task")
            except errdefs.FailedPrecondition as e:
                assert "stop the task" in str(e)
            env.ctd.ctr("task", "kill", "-s", "SIGKILL", unique_id)
            env.wait_status(unique_id, "STOPPED")
            deadline = time.monotonic() + 30
            while env.cts()[vmid]["status"] != "stopped":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            try:
                await checkpoints.rollback(api, vmid, second)
                raise AssertionError("rollback past a newer checkpoint")
            except errdefs.FailedPrecondition as e:
                assert f"delete the newer ones first: {third}" in str(e)
            await checkpoints.rollback(api, vmid, third)
        finally:
            await api.close()

    from runtime import errdefs

    asyncio.run(drive())
    assert env.ct_file(vmid, "f") == "two\n", "the CT's files are the checkpoint's"
    env.ctd.ctr("task", "rm", unique_id)
    env.ctd.ctr("container", "rm", unique_id)
    assert env.leftovers() == []


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_ctr_task_checkpoint_is_a_ct_snapshot(env: Pve, unique_id: str) -> None:
    import io
    import json
    import tarfile

    env.run(unique_id, "sleep", "300", detach=True)
    env.wait_status(unique_id, "RUNNING")
    found = env.ct_of(unique_id)
    assert found is not None
    r = env.ctd.ctr("task", "checkpoint", unique_id, check=False)
    assert r.returncode == 0, r.stderr
    ref = r.stdout.strip()

    def blob(digest: str) -> bytes:
        return subprocess.run([env.ctd.ctr_bin, "--address", env.ctd.address, "-n",
                               env.ctd.namespace, "content", "get", digest],
                              capture_output=True, check=True, timeout=30).stdout
    try:
        digest = next(line.split()[2] for line in env.ctd.ctr("images", "ls").stdout
                      .splitlines() if line.split()[:1] == [ref])
        index = json.loads(blob(digest))
        criu = next(m["digest"] for m in index["manifests"]
                    if m["mediaType"].endswith("checkpoint.criu.tar"))
        with tarfile.open(fileobj=io.BytesIO(blob(criu))) as tar:
            member = tar.extractfile("proxmox-lxcri-checkpoint.json")
            assert member is not None
            record = json.load(member)
    finally:
        env.ctd.ctr("images", "rm", ref, check=False)
    assert record["vmid"] == found[0] and record["snapshot"].startswith("checkpoint-")
    snaps = [s["name"] for s in
             env.api("GET", f"/nodes/{env.pve.node}/lxc/{found[0]}/snapshot")]
    assert record["snapshot"] in snaps
    assert env.ctd.task_status(unique_id) == "RUNNING"


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_the_specs_capabilities_bound_the_program(env: Pve, unique_id: str) -> None:
    r = env.run(unique_id, "grep", "CapBnd", "/proc/self/status")
    # ctr's default set (containerd oci.defaultUnixCaps), as runc gives it: 14 capabilities.
    assert r.stdout.split() == ["CapBnd:", "00000000a80425fb"], r.stdout


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_run_with_terminal(env: Pve, unique_id: str) -> None:
    """``ctr run -t``: the program's stdio is a pty the shim holds (bind-mounted into the CT),
    its controlling terminal, resized by ctr's ResizePty."""
    import re

    from tests.integration.test_task_api import run_on_pty

    try:
        rc, out = run_on_pty(
            ["ctr", "--address", env.ctd.address, "run", "-t", "--rm", "--runtime",
             PROXMOX_RUNTIME, "--runtime-config-path", str(env.config), env.image, unique_id,
             "sh", "-c", "tty; sleep 1; stty size; sleep 2.5; stty size; exit 4"],
            rows=24, cols=80, resize_to=(40, 132), after=2.0)
    finally:
        env.ctd.remove_container(unique_id)
    assert rc == 4, out
    assert re.search(r"^/dev/\.lxcri/fd0\r?$", out, re.M), out  # a tty: the shim's pty
    sizes = re.findall(r"^(\d+) (\d+)\r?$", out, re.M)
    # The CT's create takes longer than ctr's first resize; the last size is the resized one.
    assert sizes[-1:] == [("40", "132")], out
    assert env.leftovers() == []


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_address_from_the_projects_ipam(env: Pve, unique_id: str, tmp_path: Path) -> None:
    """A ``[network]`` pool gives net0 its bridge, VLAN, address and gateway (host-managed);
    the lease goes with the CT."""
    import json

    folder = tmp_path / "ipam"
    folder.mkdir()
    config = write_config(env.pve, folder)
    leases = tmp_path / "leases"
    config.write_text(config.read_text() + f'''
[network]
default_pool = "lan"
state_dir = "{leases}"
[network.pools.lan]
bridge = "vmbr0"
subnet = "10.99.0.0/24"
gateway = "10.99.0.1"
range = "10.99.0.100-10.99.0.110"
vlan = 30
''')
    env.run(unique_id, "sleep", "300", detach=True, config=config)
    env.wait_status(unique_id, "RUNNING")
    found = env.ct_of(unique_id)
    assert found is not None
    net0 = env.api("GET", f"/nodes/{env.pve.node}/lxc/{found[0]}/config")["net0"].split(",")
    for part in ("bridge=vmbr0", "tag=30", "ip=10.99.0.100/24", "gw=10.99.0.1",
                 "host-managed=1"):
        assert part in net0, net0
    inside = env.ctd.ctr("task", "exec", "--exec-id", "ip", unique_id, "ip", "-4", "addr",
                         "show", "eth0").stdout
    assert "inet 10.99.0.100/24" in inside, inside
    lease_file = leases / "ipam" / "lan.json"
    assert json.loads(lease_file.read_text())["leases"] == {
        "10.99.0.100": f"pve:default/{unique_id}"}
    env.ctd.remove_container(unique_id)
    assert json.loads(lease_file.read_text())["leases"] == {}
    assert env.leftovers() == []


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_update_reaches_the_cgroup_and_the_ct_config(env: Pve, unique_id: str) -> None:
    import asyncio
    import json

    from google.protobuf import any_pb2, empty_pb2

    from protos.containerd.task.v2 import shim_pb2
    from tests.integration.test_task_api import shim_call

    env.run(unique_id, "sleep", "300", detach=True)
    env.wait_status(unique_id, "RUNNING")
    found = env.ct_of(unique_id)
    assert found is not None
    resources = any_pb2.Any(
        type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
        value=json.dumps({"memory": {"limit": 200 << 20}}).encode())
    asyncio.run(shim_call(env.ctd, unique_id, "Update",
                          shim_pb2.UpdateTaskRequest(id=unique_id, resources=resources),
                          empty_pb2.Empty))
    assert env.api("GET", f"/nodes/{env.pve.node}/lxc/{found[0]}/config")["memory"] == 200
    metrics = env.ctd.ctr("task", "metrics", unique_id).stdout
    assert str(200 << 20) in metrics, metrics


@pytest.mark.pve9  # also in Debian 13: LXC 6, OpenZFS 2.3, systemd (issue 16)
def test_output_after_ctr_detached_does_not_kill_the_program(env: Pve, unique_id: str) -> None:
    """``ctr run -d`` closes its end of the output FIFOs when it returns: the program's
    later writes must not die of SIGPIPE (it holds the FIFO read-write, as under the LXC
    backend)."""
    env.run(unique_id, "sh", "-c",
            "until [ -e /tmp/go ]; do sleep 0.1; done; echo after-detach; "
            "echo err >&2; exec sleep 300", detach=True)
    env.wait_status(unique_id, "RUNNING")
    env.ctd.ctr("task", "exec", "--exec-id", "go", unique_id, "touch", "/tmp/go")
    deadline = time.monotonic() + 30
    while "sleep 300" not in env.ctd.ctr("task", "exec", "--exec-id", f"ps{time.monotonic_ns()}",
                                         unique_id, "ps", "-o", "args").stdout:
        assert env.ctd.task_status(unique_id) == "RUNNING", "killed by its own output"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert env.ctd.task_status(unique_id) == "RUNNING"
