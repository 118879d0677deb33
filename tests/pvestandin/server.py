"""The stand-in as a whole: a folder, a TLS certificate, bridges, storages, the API server.

:class:`StandIn` runs inside an asyncio loop; :class:`ThreadedStandIn` runs one in a thread of
its own so that synchronous clients (proxmoxer, tests) can talk to it. Everything it makes —
the folder, the certificate, the bridges, the ``local-zfs`` parent dataset, the CTs' LXC
processes and volumes — it removes again in :meth:`StandIn.stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import ssl
import subprocess
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from tests.harness.rootfs import populate_busybox_rootfs
from tests.pvestandin.app import Api, Auth
from tests.pvestandin.node import Node
from tests.pvestandin.schema import Router, load_paths

T = TypeVar("T")

TEMPLATE_NAME = "busybox_1.35-standin_amd64.tar.gz"
#: busybox init (the default entrypoint /sbin/init) needs an inittab to stay up; SIGPWR (LXC's
#: default halt signal, sent by `lxc-stop --nokill`) makes it run the shutdown actions and exit.
INITTAB = "::respawn:/bin/sleep 86400\n::shutdown:/bin/true\n"


@dataclass
class Options:
    node: str = "pve"
    zfs_pool: str | None = None           # an existing pool (e.g. a test pool); None: no ZFS
    schema_version: str = "9.2"
    task_delay: dict[str, float] = field(default_factory=dict)
    nextid_range: tuple[int, int] = (100, 1000000)
    token_id: str = "root@pam!standin"
    #: The token's privileges (on every path); None: all, like a privsep=0 token of root@pam.
    token_privs: frozenset[str] | None = None
    auth_fail_delay: float = 0.0
    host: str = "127.0.0.1"
    port: int = 0
    #: LXC's lxcpath for the CTs; None: a private one in the stand-in's folder. ``/var/lib/lxc``
    #: makes ``lxc-attach -n <vmid>`` work without ``-P``, as on a node.
    lxcpath: Path | None = None


def make_cert(folder: Path, node: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost (the CA file is the cert itself)."""
    cert, key = folder / "pve-ssl.pem", folder / "pve-ssl.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", f"/CN={node}",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60)
    key.chmod(0o600)
    return cert, key


def make_template(path: Path) -> None:
    """A busybox rootfs as a ``vztmpl`` archive (no /etc/os-release: ostype unmanaged)."""
    with tempfile.TemporaryDirectory(prefix="pvestandin-tmpl-") as tmp:
        root = Path(tmp)
        populate_busybox_rootfs(root)
        (root / "etc/inittab").write_text(INITTAB)
        with tarfile.open(path, "w:gz") as tar:
            tar.add(root, arcname=".")


def _ip(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)


class StandIn:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.folder = Path(tempfile.mkdtemp(prefix="pvestandin-", dir="/tmp"))
        # Like /var/lib/lxc: an unprivileged CT's root (uid 100000) must traverse the path.
        self.folder.chmod(0o755)
        self.token_secret = str(uuid.uuid4())
        self.root_password = secrets.token_urlsafe(12)
        tag = secrets.token_hex(3)
        # Bridges get unique host names; the stand-in maps vmbr0/vmbr1 onto them.
        self.bridges = {"vmbr0": f"pvs{tag}b0", "vmbr1": f"pvs{tag}b1"}
        self.made_bridges: list[str] = []
        self.zfs_parent: str | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.node: Node | None = None
        self.api: Api | None = None
        self.ca_file = self.folder / "pve-ssl.pem"

    @property
    def url(self) -> str:
        return f"https://{self.opts.host}:{self.port}/api2/json"

    async def start(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._prepare_host)
            assert self.node is None
            self.node = Node(name=self.opts.node, root=self.folder / "root",
                             zfs_parent=self.zfs_parent, bridges=self.bridges,
                             vlan_filtering=self.vlan_filtering,
                             task_delay=self.opts.task_delay,
                             nextid_range=self.opts.nextid_range,
                             version={"9.1": "9.1.3", "9.2": "9.2.0"}[self.opts.schema_version],
                             lxcpath=self.opts.lxcpath)
            local = self.node.storages["local"]
            make_template(local.template_dir / TEMPLATE_NAME)  # type: ignore[union-attr]
            auth = Auth(tokens={self.opts.token_id: self.token_secret},
                        token_privs=({self.opts.token_id: self.opts.token_privs}
                                     if self.opts.token_privs is not None else {}),
                        passwords={"root@pam": self.root_password},
                        fail_delay=self.opts.auth_fail_delay)
            self.api = Api(self.node, Router(load_paths(self.opts.schema_version)), auth)
            cert, key = make_cert(self.folder, self.opts.node)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
            self.runner = web.AppRunner(self.api.app(), access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, self.opts.host, self.opts.port, ssl_context=ctx)
            await site.start()
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        except BaseException:
            await self.stop()
            raise

    def _prepare_host(self) -> None:
        for name in self.bridges.values():
            r = _ip("link", "add", "name", name, "type", "bridge")
            if r.returncode != 0:
                raise RuntimeError(f"ip link add {name} type bridge: {r.stderr.strip()}")
            self.made_bridges.append(name)
            _ip("link", "set", name, "up")
        # vmbr0 is VLAN-aware on the node; this kernel may lack bridge VLAN filtering
        # (environment.md §5), in which case tags are recorded but not applied.
        self.vlan_filtering = _ip("link", "set", self.bridges["vmbr0"], "type", "bridge",
                                  "vlan_filtering", "1").returncode == 0
        if self.opts.zfs_pool:
            parent = f"{self.opts.zfs_pool}/pve-{secrets.token_hex(3)}"
            r = subprocess.run(["zfs", "create", "-p", parent], capture_output=True, text=True,
                               timeout=60)
            if r.returncode != 0:
                raise RuntimeError(f"zfs create {parent}: {r.stderr.strip()}")
            self.zfs_parent = parent

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.node is not None:
            await self.node.shutdown()
        await asyncio.get_running_loop().run_in_executor(None, self._cleanup_host)

    def _cleanup_host(self) -> None:
        if self.zfs_parent:
            for _ in range(5):
                r = subprocess.run(["zfs", "destroy", "-r", "-f", self.zfs_parent],
                                   capture_output=True, text=True, timeout=60)
                if r.returncode == 0 or "does not exist" in r.stderr:
                    break
            self.zfs_parent = None
        for name in self.made_bridges:
            _ip("link", "del", name)
        self.made_bridges.clear()
        # A mount a crashed CT left (its rootfs bind mount) goes lazily before the rmtree.
        with contextlib.suppress(OSError):
            for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
                point = line.split()[4]
                if point.startswith(str(self.folder) + "/"):
                    subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    vlan_filtering = False


class ThreadedStandIn:
    """A :class:`StandIn` on its own event loop in a daemon thread."""

    def __init__(self, opts: Options) -> None:
        self.standin = StandIn(opts)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="pvestandin",
                                       daemon=True)

    def __enter__(self) -> StandIn:
        self.thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.standin.start(), self.loop).result(120)
        except BaseException:
            self._end()
            raise
        return self.standin

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.standin.stop(), self.loop).result(180)
        finally:
            self._end()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the stand-in's loop (tests: inspect or poke its state)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def _end(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()
