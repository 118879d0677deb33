"""``make demo-proxmox``: the same hello as ``make demo``, through the Proxmox VE backend.

    python -m tests.harness.demo_proxmox

Starts the Proxmox stand-in (tests/pvestandin: the API from Proxmox's schema, CTs on real LXC,
``local-zfs`` on a zfs-fuse pool), a private containerd, imports busybox, and runs
``ctr run --rm`` with a configuration whose ``[backend] type = "proxmox"``. While the hello
runs detached once, the CT is shown as the Proxmox API lists it (VMID, status, config). Then
everything is removed and the stand-in is checked to hold no CT but the image template.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

from tests.harness.containerd import PrivateContainerd
from tests.harness.demo import COMMAND, Steps
from tests.harness.fixtures import PROXMOX_RUNTIME, integration_skip_reason
from tests.harness.image import DEFAULT_REF, build_busybox_image
from tests.harness.zfs import ZfsFuse, test_pool, zfs_skip_reason
from tests.pvestandin.fixture import random_range, running_standin, standin_skip_reason
from tests.pvestandin.server import Options


def _api(pve, path: str):  # type: ignore[no-untyped-def]
    r = requests.get(pve.url + path, headers={"Authorization": pve.auth_header()},
                     verify=pve.ca_file, timeout=30)
    r.raise_for_status()
    return r.json()["data"]


def run() -> int:
    from tests.integration.test_proxmox_backend import write_config

    for reason in (integration_skip_reason(), standin_skip_reason(), zfs_skip_reason()):
        if reason:
            print(f"demo-proxmox cannot run here: {reason}", file=sys.stderr)
            return 2
    steps = Steps()
    cid = f"demo-pve-{uuid.uuid4().hex[:8]}"
    print(f"Proxmox LXCRI demo, Proxmox VE backend: container id {cid}")
    ZfsFuse().ensure()
    with tempfile.TemporaryDirectory(prefix="lxcri-demo-pve-") as tmp, \
            test_pool(prefix="pvs") as pool, \
            running_standin(Options(zfs_pool=pool.name, nextid_range=random_range()),
                            pool) as pve:
        steps.step(f"Proxmox stand-in at {pve.url} (node {pve.node}, local-zfs on {pool.name})")
        config = write_config(pve, Path(tmp))
        steps.info(config.read_text().replace(pve.token_secret, "<secret>"))
        ctd = PrivateContainerd()
        try:
            steps.step(f"Private containerd in {ctd.folder}, busybox image {DEFAULT_REF}")
            ctd.start()
            ctd.import_image(build_busybox_image(Path(tmp) / "busybox.tar", DEFAULT_REF))
            flags = ["--runtime", PROXMOX_RUNTIME, "--runtime-config-path", str(config)]

            steps.step(f"ctr run -d ... {cid}-d sh -c '{COMMAND}; sleep 30', then the CT in "
                       "the Proxmox API")
            ctd.ctr("run", "-d", *flags, DEFAULT_REF, f"{cid}-d", "sh", "-c",
                    COMMAND + "; sleep 30", timeout=180)
            for ct in _api(pve, f"/nodes/{pve.node}/lxc"):
                kind = "image template" if ct.get("template") else "container"
                steps.info(f"VMID {ct['vmid']}  {ct['status']:<8} {ct.get('name', ''):<36} "
                           f"pid {ct.get('pid', '-')}  ({kind})")
                if not ct.get("template"):
                    conf = _api(pve, f"/nodes/{pve.node}/lxc/{ct['vmid']}/config")
                    steps.info(json.dumps({k: conf[k] for k in (
                        "hostname", "description", "tags", "net0", "rootfs", "entrypoint",
                        "onboot") if k in conf}, indent=1))
            ctd.ctr("task", "kill", "-s", "SIGKILL", f"{cid}-d")
            ctd.remove_container(f"{cid}-d")

            steps.step(f"ctr run --rm ... {cid} sh -c '{COMMAND}'")
            t0 = time.monotonic()
            r = ctd.ctr("run", "--rm", *flags, DEFAULT_REF, cid, "sh", "-c", COMMAND,
                        check=False, timeout=180)
            steps.info(f"output: {r.stdout.strip()!r}  exit status: {r.returncode}  "
                       f"({time.monotonic() - t0:.2f} s)")
            if r.returncode != 0 or "hello from an LXC container" not in r.stdout:
                steps.fail(f"ctr run: {r.stderr.strip()}")

            steps.step("What the stand-in still holds (the image template is the cache)")
            left = pve.leftovers()
            steps.info("\n".join(left) or "nothing")
            templates = {str(c["vmid"]) for c in _api(pve, f"/nodes/{pve.node}/lxc")
                         if c.get("template")}
            extra = [x for x in left if not any(t in x for t in templates)]
            if extra:
                steps.fail(f"left behind: {extra}")
        finally:
            ctd.cleanup()
    print("\nOK" if not steps.failed else f"\nFAILED: {steps.failed}")
    return 1 if steps.failed else 0


if __name__ == "__main__":
    sys.exit(run())
