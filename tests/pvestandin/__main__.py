"""``python -m tests.pvestandin``: run the stand-in until Ctrl-C / SIGTERM.

Prints the API URL, the token (``PVEAPIToken=...`` header value), the CA file and the node
name, one ``KEY=value`` per line, so scripts (``make demo-proxmox``) can read them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from tests.harness.zfs import ZfsFuse, test_pool, zfs_skip_reason
from tests.pvestandin.server import TEMPLATE_NAME, Options, StandIn


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.pvestandin", description=__doc__)
    ap.add_argument("--node", default="pve")
    ap.add_argument("--port", type=int, default=0, help="default: a free port")
    ap.add_argument("--no-zfs", action="store_true", help="no local-zfs storage")
    ap.add_argument("--schema", choices=("9.1", "9.2"), default="9.2")
    ap.add_argument("--lxcpath", type=Path, default=None,
                    help="LXC path for the CTs (default: private; /var/lib/lxc as on a node)")
    ap.add_argument("--task-delay", type=float, default=0.0,
                    help="seconds every worker task waits before it runs")
    args = ap.parse_args()
    daemon = None
    pool_cm = None
    pool_name = None
    if not args.no_zfs:
        reason = zfs_skip_reason()
        if reason:
            print(f"zfs unavailable ({reason}); use --no-zfs", file=sys.stderr)
            return 2
        daemon = ZfsFuse()
        daemon.ensure()
        pool_cm = test_pool(prefix="pvs")
        pool_name = pool_cm.__enter__().name
    try:
        return asyncio.run(_serve(Options(node=args.node, port=args.port, zfs_pool=pool_name,
                                          schema_version=args.schema,
                                          task_delay={"*": args.task_delay},
                                          lxcpath=args.lxcpath)))
    finally:
        if pool_cm is not None:
            pool_cm.__exit__(None, None, None)
        if daemon is not None:
            daemon.stop()


async def _serve(opts: Options) -> int:
    standin = StandIn(opts)
    await standin.start()
    try:
        print(f"PVE_URL={standin.url}")
        print(f"PVE_HOST={opts.host}:{standin.port}")
        print(f"PVE_NODE={opts.node}")
        print(f"PVE_TOKEN_ID={opts.token_id}")
        print(f"PVE_TOKEN_SECRET={standin.token_secret}")
        print(f"PVE_AUTH_HEADER=PVEAPIToken={opts.token_id}={standin.token_secret}")
        print(f"PVE_CA_FILE={standin.ca_file}")
        print(f"PVE_TEMPLATE=local:vztmpl/{TEMPLATE_NAME}")
        print(f"PVE_ROOT_PASSWORD={standin.root_password}")
        assert standin.node is not None
        print(f"PVE_LXCPATH={standin.node.lxc.lxcpath}")
        print(f"PVE_CONF_DIR={standin.node.conf_dir}")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
