"""``proxmox-lxcri health`` and ``proxmox-lxcri metrics`` (issue 15), against the real thing.

health: with a zfs-fuse pool configured, then with that pool exported (a pool gone from under
the runtime), with the LXC tools missing from PATH and with a Proxmox API nobody answers.
metrics: a private containerd runs containers on a zfs-fuse pool; the endpoint is scraped and
its figures are checked against what was done.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.containerd import PrivateContainerd
from tests.harness.fixtures import PROXMOX_RUNTIME, BusyboxImage
from tests.harness.zfs import TestPool, zfs_fuse_fixture, zfs_pool_fixture  # noqa: F401
from tests.pvestandin.fixture import StandInHandle, pve_standin_nozfs_fixture  # noqa: F401

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from shim.operator_cli import main; main()"]


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=timeout, check=False)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def state_root(tmp_path: Path) -> dict[str, str]:
    return {"PROXMOX_LXCRI_ROOT": str(tmp_path / "root")}


def test_health_with_a_pool_then_the_pool_gone(zfs_pool: TestPool, tmp_path: Path,
                                               state_root: dict[str, str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\nzfs_pool = "{zfs_pool.name}"\n')
    r = cli("health", "--config", str(config), env=state_root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"ok   zfs pool {zfs_pool.name}: ONLINE" in r.stdout
    assert r.stdout.rstrip().endswith("healthy (4 checks)")

    subprocess.run(["zpool", "export", zfs_pool.name], check=True, capture_output=True)
    try:
        r = cli("health", "--config", str(config), env=state_root)
    finally:
        subprocess.run(["zpool", "import", "-d", str(zfs_pool.folder), zfs_pool.name],
                       check=False, capture_output=True)
    assert r.returncode == 1, r.stdout
    assert f"FAIL zfs pool {zfs_pool.name}: zpool list {zfs_pool.name}:" in r.stdout
    assert "1 of 4 checks failed" in r.stdout


def test_health_names_missing_lxc_tools_and_an_unreachable_api(
        tmp_path: Path, state_root: dict[str, str]) -> None:
    with socket.socket() as s:  # a port on loopback where nobody listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = tmp_path / "secret"
    secret.write_text("00000000-0000-0000-0000-000000000000\n")
    secret.chmod(0o600)
    ca = tmp_path / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=test", "-keyout", str(tmp_path / "key.pem"), "-out", str(ca)],
                   check=True, capture_output=True)
    config = tmp_path / "config.toml"
    config.write_text(f'[proxmox]\nurl = "https://127.0.0.1:{port}"\n'
                      f'token_id = "root@pam!lxcri"\ntoken_secret_file = "{secret}"\n'
                      f'ca_file = "{ca}"\n')
    empty = tmp_path / "bin"
    empty.mkdir()
    r = cli("health", "--config", str(config), env={**state_root, "PATH": str(empty)})
    assert r.returncode == 1
    assert "FAIL lxc: not on PATH: lxc-start, lxc-attach, lxc-info" in r.stdout
    assert f"FAIL proxmox api https://127.0.0.1:{port}: unreachable:" in r.stdout
    assert "ok   cgroups:" in r.stdout and "ok   state root:" in r.stdout
    assert "00000000-0000" not in r.stdout + r.stderr  # the secret is never shown


def test_health_reaches_the_proxmox_api_with_the_token(
        pve_standin_nozfs: StandInHandle, tmp_path: Path, state_root: dict[str, str]) -> None:
    pve = pve_standin_nozfs
    secret = tmp_path / "secret"
    secret.write_text(pve.token_secret + "\n")
    secret.chmod(0o600)
    config = tmp_path / "config.toml"
    body = (f'[proxmox]\nurl = "https://{pve.host}:{pve.port}"\nnode = "{pve.node}"\n'
            f'token_id = "{pve.token_id}"\ntoken_secret_file = "{secret}"\n'
            f'ca_file = "{pve.ca_file}"\n')
    config.write_text(body)
    r = cli("health", "--config", str(config), env=state_root)
    assert r.returncode == 0, r.stdout
    assert f"ok   proxmox api https://{pve.host}:{pve.port}: answers:" in r.stdout
    secret.write_text("11111111-2222-3333-4444-555555555555\n")  # a wrong secret
    r = cli("health", "--config", str(config), env=state_root)
    assert r.returncode == 1
    assert "HTTP 401" in r.stdout and "check the token id and secret" in r.stdout
    assert "11111111-2222" not in r.stdout + r.stderr


def test_metrics_refuses_a_non_loopback_listen_address() -> None:
    r = cli("metrics", "--listen", "0.0.0.0:9464")
    assert r.returncode == 2
    assert "0.0.0.0 is not a loopback address" in r.stderr


@pytest.fixture
def endpoint(containerd: PrivateContainerd, tmp_path: Path,
             zfs_pool: TestPool) -> Iterator[tuple[str, Path]]:
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\nzfs_pool = "{zfs_pool.name}"\ncriu = "never"\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*CLI, "metrics", "--config", str(config), "--listen",
                             f"127.0.0.1:{port}"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PROXMOX_LXCRI_ROOT": str(containerd.lxcri_root)})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("serving metrics on"), proc.stderr
        yield f"http://127.0.0.1:{port}/metrics", config
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        return samples(resp.read().decode())


def test_metrics_endpoint_after_load(endpoint: tuple[str, Path], containerd: PrivateContainerd,
                                     busybox_image: BusyboxImage, zfs_pool: TestPool,
                                     unique_id: str) -> None:
    url, config = endpoint
    before = scrape(url)
    clones_before = before.get(("lxcri_zfs_duration_seconds_count", (("step", "clone"),)), 0)
    n = 3
    for i in range(n):
        r = containerd.ctr("run", "--rm", "--runtime", PROXMOX_RUNTIME, "--runtime-config-path",
                           str(config), busybox_image.ref, f"{unique_id}-{i}", "true",
                           check=False, timeout=60)
        assert r.returncode == 0, r.stderr
    sleeper = f"{unique_id}-s"
    containerd.ctr("run", "-d", "--runtime", PROXMOX_RUNTIME, "--runtime-config-path",
                   str(config), busybox_image.ref, sleeper, "sleep", "60", timeout=60)
    try:
        deadline = time.monotonic() + 15
        while containerd.task_status(sleeper) != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        got = scrape(url)
        clones = got[("lxcri_zfs_duration_seconds_count", (("step", "clone"),))]
        assert clones - clones_before == n + 1
        assert got[("lxcri_operations_total", (("operation", "dataset_create"),
                                                ("outcome", "ok"), ("source", "storage")))] \
            >= n + 1
        assert got[("lxcri_containers", (("state", "running"),))] >= 1
        assert got[("lxcri_shims", ())] >= 1
        assert got[("lxcri_shims_rss_bytes", ())] > 1 << 20
        used = [v for (name, labels), v in got.items()
                if name == "lxcri_zfs_dataset_used_bytes"
                and dict(labels)["dataset"] == f"{zfs_pool.name}/containers/{sleeper}"]
        # Present for the running container's dataset. Its value is what `zfs get used` says:
        # a fresh clone shares every block with its image, so zfs-fuse reports 0 here.
        assert len(used) == 1 and used[0] >= 0
    finally:
        containerd.remove_container(sleeper)
