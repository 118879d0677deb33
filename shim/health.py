"""``proxmox-lxcri health``: can this node run containers through the runtime right now?

Each check says ``ok``, ``warn`` (works, with a caveat) or ``FAIL`` (containers will fail), and
what it looked at. The exit code is 0 when nothing failed, 1 otherwise, so the command can
serve as a liveness probe or a monitoring check. Checks:

- the LXC tools the backend runs, and LXC's version;
- the cgroup mounts: a cgroup v2 hierarchy with the memory, pids and cpu controllers, or the v1
  hierarchies of memory, pids, cpu and freezer (hybrid hosts);
- the state root: a directory root can write;
- the ZFS pool of ``[storage]``, when one is configured: present and ONLINE;
- the Proxmox API, when ``[proxmox]`` names one: ``GET /api2/json/version`` answers.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.cgroups import cgroup_mounts

#: What runtime/lxc runs (grep "lxc-" runtime/lxc): missing, the matching RPC fails.
LXC_TOOLS = ("lxc-start", "lxc-attach", "lxc-info", "lxc-checkpoint")


def _built() -> dict[str, Path]:
    """The project's own binaries every container needs (built by `make setup` / the .deb)."""
    from runtime.lxc import backend, owninit

    return {"monitor": backend.MONITOR, "init": owninit.BINARY}
V2_CONTROLLERS = ("memory", "pids", "cpu")
V1_CONTROLLERS = ("memory", "pids", "cpu", "freezer")
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "FAIL"
    detail: str


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False, stdin=subprocess.DEVNULL)


def check_lxc() -> Check:
    missing = [t for t in LXC_TOOLS if shutil.which(t) is None]
    if missing:
        return Check("lxc", "FAIL", f"not on PATH: {', '.join(missing)} (apt-get install lxc)")
    try:
        r = _run(["lxc-start", "--version"])
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check("lxc", "FAIL", f"lxc-start --version: {e}")
    if r.returncode != 0:
        return Check("lxc", "FAIL", f"lxc-start --version exited {r.returncode}: "
                                    f"{r.stderr.strip()[:200]}")
    missing_bin = [f"{what} {p}" for what, p in _built().items() if not os.access(p, os.X_OK)]
    if missing_bin:
        return Check("lxc", "FAIL", f"not built: {', '.join(missing_bin)} (run `make setup`)")
    return Check("lxc", "ok", f"LXC {r.stdout.strip()}, {len(LXC_TOOLS)} tools, the monitor "
                              f"and the init found")


def check_cgroups(mountinfo: str | None = None) -> Check:
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError as e:
            return Check("cgroups", "FAIL", f"cannot read /proc/self/mountinfo: {e}")
    v1, v2 = cgroup_mounts(mountinfo)
    if v2 is not None and not v1:
        try:
            have = set((v2 / "cgroup.controllers").read_text().split())
        except OSError as e:
            return Check("cgroups", "FAIL", f"cgroup v2 at {v2}: {e}")
        lack = [c for c in V2_CONTROLLERS if c not in have]
        if lack:
            return Check("cgroups", "FAIL", f"cgroup v2 at {v2} lacks the controllers "
                                            f"{', '.join(lack)}")
        return Check("cgroups", "ok", f"cgroup v2 at {v2} ({', '.join(V2_CONTROLLERS)})")
    lack = [c for c in V1_CONTROLLERS if c not in v1]
    if lack:
        return Check("cgroups", "FAIL", f"cgroup v1 hierarchies missing: {', '.join(lack)}"
                                        + (f" (cgroup v2 at {v2})" if v2 else ""))
    return Check("cgroups", "ok", "cgroup v1 (hybrid)" + (f", cgroup v2 at {v2}" if v2 else "")
                 + f": {', '.join(V1_CONTROLLERS)} mounted")


def check_state_root(root: Path) -> Check:
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".health-"):
            pass
    except OSError as e:
        return Check("state root", "FAIL", f"{root}: {e}")
    return Check("state root", "ok", f"{root} is writable")


def check_zfs_pool(dataset: str) -> Check:
    pool = dataset.split("/", 1)[0]
    name = f"zfs pool {pool}"
    if shutil.which("zpool") is None:
        return Check(name, "FAIL", "zpool is not on PATH (zfsutils-linux or zfs-fuse)")
    try:
        r = _run(["zpool", "list", "-H", "-o", "health", pool])
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check(name, "FAIL", f"zpool list: {e}")
    if r.returncode != 0:
        return Check(name, "FAIL", f"zpool list {pool}: {(r.stderr or r.stdout).strip()[:300]}")
    health = r.stdout.strip()
    if health != "ONLINE":
        status = _run(["zpool", "status", "-x", pool]).stdout.strip()
        return Check(name, "FAIL", f"health {health}: {status[:300]}")
    try:
        d = _run(["zfs", "list", "-H", "-o", "name,avail", dataset])
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check(name, "FAIL", f"zfs list: {e}")
    if d.returncode != 0:
        return Check(name, "FAIL", f"pool ONLINE, but dataset {dataset}: "
                                   f"{d.stderr.strip()[:300]}")
    avail = d.stdout.split("\t")[-1].strip()
    return Check(name, "ok", f"ONLINE, dataset {dataset} has {avail} available")


def check_proxmox_api(config: dict[str, Any]) -> Check:
    """GET <url>/api2/json/version with the backend's own settings (runtime/proxmox/settings:
    the same defaults for url and CA, the same root-only secret file): reachable, TLS, auth."""
    from runtime.errdefs import ErrdefsError
    from runtime.proxmox import settings as pset

    try:
        s = pset.parse(config)
    except ErrdefsError as e:
        return Check("proxmox api", "FAIL", str(e))
    name = f"proxmox api {s.url}"
    try:
        ctx = ssl.create_default_context(cafile=s.ca_file)
    except (OSError, ssl.SSLError) as e:
        return Check(name, "FAIL", f"CA file {s.ca_file}: {getattr(e, 'strerror', None) or e}")
    headers = {}
    if s.token_id:
        try:
            secret = pset.read_secret(s.token_secret_file)
        except ErrdefsError as e:
            return Check(name, "FAIL", str(e))
        # PVEAPIToken=USER@REALM!TOKENID=SECRET (proxmox-api.md §3.3); never shown.
        headers["Authorization"] = f"PVEAPIToken={s.token_id}={secret}"
    req = urllib.request.Request(f"{s.url}/api2/json/version", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S, context=ctx) as resp:
            body = resp.read(4096).decode(errors="replace")
    except urllib.error.HTTPError as e:
        return Check(name, "FAIL", f"HTTP {e.code} {e.reason}"
                     + (" (check the token id and secret)" if e.code == 401 else ""))
    except urllib.error.URLError as e:
        return Check(name, "FAIL", f"unreachable: {e.reason}")
    except (OSError, ssl.SSLError) as e:
        return Check(name, "FAIL", f"unreachable: {e}")
    return Check(name, "ok", f"answers: {body[:120]}")


def run_checks(config: dict[str, Any], root: Path) -> list[Check]:
    checks = [check_lxc(), check_cgroups(), check_state_root(root)]
    pool = (config.get("storage") or {}).get("zfs_pool")
    if pool:
        checks.append(check_zfs_pool(str(pool)))
    backend = str((config.get("backend") or {}).get("type", "lxc"))
    if backend == "proxmox" or config.get("proxmox"):
        checks.append(check_proxmox_api(config))
    return checks


def report(checks: list[Check]) -> tuple[str, int]:
    lines = [f"{c.status:<4} {c.name}: {c.detail}" for c in checks]
    failed = [c for c in checks if c.status == "FAIL"]
    lines.append(f"{len(failed)} of {len(checks)} checks failed" if failed
                 else f"healthy ({len(checks)} checks)")
    return "\n".join(lines), 1 if failed else 0


