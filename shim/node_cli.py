"""``proxmox-lxcri metrics`` and ``proxmox-lxcri health``: the node as an operator checks it."""

from __future__ import annotations

import argparse
import http.server
import sys
from pathlib import Path
from typing import Any


def _config(args: argparse.Namespace) -> dict[str, Any]:
    from runtime import config as runtime_config

    return runtime_config.load(Path(args.config) if args.config else None)


def _root() -> Path:
    from runtime.store import state_root

    return state_root()


def cmd_health(args: argparse.Namespace) -> int:
    from runtime.errdefs import ErrdefsError
    from shim import health

    try:
        config = _config(args)
    except (ErrdefsError, OSError) as e:
        print(f"FAIL config: {e}")
        return 1
    text, code = health.report(health.run_checks(config, _root()))
    print(text)
    return code


def cmd_metrics(args: argparse.Namespace) -> int:
    from shim import node_metrics

    config = _config(args)
    root = _root()
    if not args.listen:
        sys.stdout.write(node_metrics.exposition(root, config).decode())
        return 0
    host, _, port = args.listen.rpartition(":")
    try:
        node_metrics.check_loopback(host or "127.0.0.1")
        port_no = int(port)
    except ValueError as e:
        print(f"proxmox-lxcri metrics: {e}", file=sys.stderr)
        return 2

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            body = node_metrics.exposition(root, config)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *a: Any) -> None:
            pass  # a scrape every few seconds is not news

    server_cls: type[http.server.HTTPServer] = http.server.HTTPServer
    if ":" in host.strip("[]"):
        class V6(http.server.HTTPServer):
            import socket as _s
            address_family = _s.AF_INET6
        server_cls = V6
    with server_cls((host.strip("[]") or "127.0.0.1", port_no), Handler) as srv:
        print(f"serving metrics on http://{args.listen}/metrics", flush=True)
        try:
            srv.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


def register(sub: Any) -> None:
    h = sub.add_parser("health", help="check LXC, cgroups, the state root, the ZFS pool and "
                                      "the Proxmox API; exit 1 when something fails")
    h.add_argument("--config", help="runtime config (default /etc/proxmox-lxcri/config.toml)")
    h.set_defaults(func=cmd_health)
    m = sub.add_parser("metrics", help="runtime metrics in Prometheus' text format")
    m.add_argument("--config", help="runtime config (default /etc/proxmox-lxcri/config.toml)")
    m.add_argument("--listen", metavar="HOST:PORT",
                   help="serve them on http://HOST:PORT/metrics (loopback addresses only) "
                        "instead of printing them once")
    m.set_defaults(func=cmd_metrics)
