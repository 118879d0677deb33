"""Capture the ``zfs``/``zpool`` output the parsers read, for the unit tests' golden files.

    python -m tests.unit.storage.capture POOL OUTDIR      (POOL must exist and be empty)

Run on zfs-fuse (here) and on OpenZFS (in the kernel test host, tests/kernel/
test_zfs_driver_openzfs.py::test_capture_openzfs_output prints the same JSON). Names in the
output are rewritten to the pool name ``tank`` and mountpoints to ``/mnt/tank`` so captures of
different runs compare; sizes and times are kept as captured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROPS = "type,used,referenced,available,quota,reservation,origin,creation,mountpoint,mounted"


def _run(*argv: str) -> dict[str, object]:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    return {"argv": list(argv), "rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}


def capture(pool: str) -> dict[str, dict[str, object]]:
    ds = f"{pool}/containers/c1"
    setup = [
        ("zfs", "create", "-p", f"{pool}/containers"),
        ("zfs", "create", "-o", "quota=104857600", "-o", "reservation=10485760", ds),
        ("zfs", "snapshot", f"{ds}@checkpoint-1"),
        ("zfs", "clone", f"{ds}@checkpoint-1", f"{pool}/containers/c2"),
        ("zfs", "snapshot", "-o", "lxcri.proxmox.io:exported=tok", f"{ds}@checkpoint-2"),
    ]
    for argv in setup:
        r = _run(*argv)
        if r["rc"] != 0:
            raise SystemExit(f"{argv}: {r['stderr']}")
    out = {
        "get_recursive": _run("zfs", "get", "-H", "-p", "-r", "-o", "name,property,value",
                              f"{PROPS},lxcri.proxmox.io:exported", pool),
        "zpool_list": _run("zpool", "list", "-H", "-o", "name,health,size,allocated,free",
                           pool),
        "err_exists": _run("zfs", "create", ds),
        "err_missing": _run("zfs", "get", "-H", "-o", "name", "type", f"{pool}/nope"),
        "err_children": _run("zfs", "destroy", ds),
        "err_clones": _run("zfs", "destroy", "-r", ds),
        "err_newer": _run("zfs", "rollback", f"{ds}@checkpoint-1"),
        "err_badvalue": _run("zfs", "create", "-o", "quota=lots", f"{pool}/q"),
        "err_nopool": _run("zpool", "list", "-H", "-o", "name", "nosuchpool"),
        "err_snap_exists": _run("zfs", "snapshot", f"{ds}@checkpoint-1"),
    }
    for argv in (("zfs", "destroy", f"{pool}/containers/c2"),
                 ("zfs", "destroy", "-r", f"{pool}/containers")):
        _run(*argv)
    return out


def normalise(data: dict[str, dict[str, object]], pool: str, mountpoint: str) -> str:
    text = json.dumps(data, indent=1, sort_keys=True)
    return text.replace(mountpoint, "/mnt/tank").replace(pool, "tank")


def main() -> None:
    pool, outdir = sys.argv[1], Path(sys.argv[2])
    mountpoint = subprocess.run(["zfs", "get", "-H", "-o", "value", "mountpoint", pool],
                                capture_output=True, text=True, check=True).stdout.strip()
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "outputs.json").write_text(normalise(capture(pool), pool, mountpoint) + "\n")


if __name__ == "__main__":
    main()
