"""The Proxmox backend's half of the ``delete`` action (runtime.registry, runtime.backend
Cleanup): after a shim died, stop and destroy the task's CT through the API and report the
program's exit status from the init's status file. Standard library only (urllib), synchronous,
idempotent, within containerd's 5 s budget: the destroy task is started and polled for the
time left, and what does not finish in time is finished by Proxmox itself (a destroy task runs
to its end without its caller)."""

from __future__ import annotations

import json
import shutil
import signal
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from runtime.proxmox import state as pvestate
from runtime.proxmox.initdir import DIR_NAME, exit_status

BUDGET = 4.0


def cleanup(state_dir: Path, bundle: Path) -> tuple[int, int]:
    st = pvestate.load(state_dir)
    if st is None:
        return 0, 128 + signal.SIGKILL
    status = exit_status(state_dir / DIR_NAME)
    if st.vmid:
        try:
            _destroy(st)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            # Recorded, never raised with the secret: the message holds no header.
            import logging
            logging.getLogger(__name__).error("CT %d: destroy after a lost shim failed: %s",
                                              st.vmid, exc)
    if st.lease_pool:
        from runtime.proxmox.address import release

        release(st.lease_pool, st.lease_dir, st.lease_owner)
    shutil.rmtree(state_dir / DIR_NAME, ignore_errors=True)
    pvestate.remove(state_dir)
    return st.pid, status if status is not None else 128 + signal.SIGKILL


def _destroy(st: pvestate.PveState) -> None:
    from runtime.proxmox.settings import read_secret

    secret = read_secret(Path(st.token_secret_file))
    ctx = ssl.create_default_context(cafile=st.ca_file)
    deadline = time.monotonic() + BUDGET

    def req(method: str, path: str, params: dict[str, str] | None = None) -> Any:
        q = urllib.parse.urlencode(params or {})
        url = f"{st.url}/api2/json{path}" + (f"?{q}" if q and method != "POST" else "")
        data = q.encode() if method == "POST" else None
        r = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"PVEAPIToken={st.token_id}={secret}"})
        timeout = max(0.5, deadline - time.monotonic())
        with urllib.request.urlopen(r, context=ctx, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}").get("data")

    def wait(upid: str) -> None:
        node = upid.split(":")[1]
        path = f"/nodes/{node}/tasks/{urllib.parse.quote(upid, safe='')}/status"
        while time.monotonic() < deadline:
            if (req("GET", path) or {}).get("status") == "stopped":
                return
            time.sleep(0.05)

    base = f"/nodes/{urllib.parse.quote(st.node)}/lxc/{st.vmid}"
    try:
        cur = req("GET", f"{base}/status/current") or {}
    except urllib.error.HTTPError as exc:
        if exc.code == 500:  # "Configuration file … does not exist": already gone
            return
        raise
    if cur.get("status") == "running":
        wait(req("POST", f"{base}/status/stop"))
    try:
        upid = req("DELETE", base, {"purge": "1", "destroy-unreferenced-disks": "1"})
    except urllib.error.HTTPError as exc:
        if exc.code == 500 and "does not exist" in str(exc.reason):
            return
        raise
    wait(upid)
