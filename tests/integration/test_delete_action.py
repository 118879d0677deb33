"""The `delete` action after a shim died: it releases what is left and runs the spec's
poststop hooks, which the dead daemon could not (runtime.md "Lifecycle")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from protos.containerd.task.v2 import shim_pb2

pytestmark = pytest.mark.integration


@pytest.mark.skipif(shutil.which("containerd-shim-proxmox-v2") is None,
                    reason="the shim launcher is not installed (make setup)")
def test_delete_after_a_crash_runs_poststop_hooks() -> None:
    base = Path(tempfile.mkdtemp(prefix="lxcri-del-"))
    try:
        bundle, root = base / "bundle", base / "root"
        bundle.mkdir()
        marker, failing = base / "poststop.json", base / "never"
        spec = {"ociVersion": "1.0.2", "annotations": {"a": "b"},
                "process": {"args": ["true"], "cwd": "/"}, "root": {"path": "rootfs"},
                "hooks": {"poststop": [
                    {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {marker}"]},
                    {"path": "/bin/sh", "args": ["sh", "-c", f"exit 3; touch {failing}"]}]}}
        (bundle / "config.json").write_text(json.dumps(spec))
        # What a daemon leaves when it is killed: its state snapshot.
        state_dir = root / "containers" / "ns1" / "c1"
        state_dir.mkdir(parents=True)
        (state_dir / "state.json").write_text(json.dumps(
            {"schema": 1, "id": "c1", "pid": 4242, "status": "running", "exit_status": None}))
        env = {**os.environ, "PROXMOX_LXCRI_ROOT": str(root)}
        argv = ["containerd-shim-proxmox-v2", "-namespace", "ns1", "-address", "/x.sock",
                "-id", "c1", "-bundle", str(bundle), "delete"]
        r = subprocess.run(argv, cwd=bundle, env=env, capture_output=True, timeout=10)
        assert r.returncode == 0, r.stderr
        resp = shim_pb2.DeleteResponse.FromString(r.stdout)
        assert resp.pid == 4242
        state = json.loads(marker.read_text())
        assert (state["id"], state["status"], state["bundle"], state["annotations"]) == (
            "c1", "stopped", str(bundle), {"a": "b"})
        assert b"hooks.poststop[1]" in r.stderr and b"status 3" in r.stderr
        assert not state_dir.exists()
        # Idempotent: nothing left, so the second run neither fails nor runs the hooks again.
        marker.unlink()
        again = subprocess.run(argv, cwd=bundle, env=env, capture_output=True, timeout=10)
        assert again.returncode == 0 and not marker.exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
