"""A private containerd for tests, the demo and the benchmarks.

Everything lives in one short temporary folder (``/tmp/lxcri-ctd-XXXX``: unix socket paths must
stay under 108 bytes, so pytest's long tmp paths are not usable): config.toml, root, state, the
gRPC socket (containerd derives the ttrpc socket as ``<grpc>.ttrpc``) and containerd's log.
The CRI plugin is off unless ``cri=True`` (:class:`CriSettings`): then containerd runs in a
network namespace of its own (so the CNI bridge and its subnet touch nothing else on the
machine), with Debian's CNI plugins (bridge + host-local, state kept in the folder), the
``runc`` handler (runc's state root in the folder too) and the handler of
``packaging/containerd-runtime.toml``. Otherwise the runtime under test is only a ``--runtime``
name passed to ``ctr``, so the same code drives ``io.containerd.runc.v2`` and
``io.containerd.proxmox.v2``.

Processes are only ever ended by PID. ``cleanup()`` attributes shims to this containerd by the
socket in each bundle's ``address`` file, by PIDs recorded while running, and by processes whose
cmdline or environment names this folder (containerd passes ``-address <our socket>`` and its own
environment to every shim), plus everything below those in the process tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.harness import leaks

TASK_DIR = "io.containerd.runtime.v2.task"
# packaging/setup.sh writes launchers for this checkout here, as well as to /usr/local/bin.
CHECKOUT_BIN = Path(__file__).resolve().parents[2] / ".stamps" / "bin"
#: The containerd configuration fragment this project ships (the CRI handler of our shim).
PACKAGED_RUNTIME = Path(__file__).resolve().parents[2] / "packaging" / "containerd-runtime.toml"
#: Where Debian's containernetworking-plugins puts the CNI plugins.
CNI_BIN = "/usr/lib/cni"
CRI_PLUGIN = "io.containerd.grpc.v1.cri"


def packaged_handler() -> tuple[str, str]:
    """(handler name, runtime_type) of the CRI runtime in packaging/containerd-runtime.toml."""
    runtimes = tomllib.loads(PACKAGED_RUNTIME.read_text())["plugins"][CRI_PLUGIN][
        "containerd"]["runtimes"]
    name, table = next(iter(runtimes.items()))
    return name, table["runtime_type"]


@dataclass(frozen=True)
class CriSettings:
    """What the CRI plugin needs: the sandbox ("pause") image, and the pod network."""

    sandbox_image: str
    #: A bridge name unique to this containerd (at most 15 characters; "" picks one).
    bridge: str = ""
    #: The pods' /24 ("" picks one in 10.200-249.x; it only lives in containerd's own
    #: network namespace, but a unique one cannot be mistaken for another test's).
    subnet: str = ""


class CtrError(subprocess.CalledProcessError):
    """A failed ``ctr`` call whose message includes ctr's stderr (CalledProcessError's does not)."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout!r}\nstderr: {self.stderr!r}"


class PrivateContainerd:
    def __init__(self, *, namespace: str = "default", env: dict[str, str] | None = None,
                 containerd_bin: str = "containerd", ctr_bin: str = "ctr",
                 cri: CriSettings | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="lxcri-ctd-", dir="/tmp"))
        self.cri = cri
        #: With ``cri``: the pods' subnet (the CNI configuration's).
        self.pod_subnet = ""
        self.namespace = namespace
        self.containerd_bin = containerd_bin
        self.ctr_bin = ctr_bin
        self.config_path = self.folder / "config.toml"
        self.log_path = self.folder / "containerd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._seen: dict[int, int | None] = {}  # shim PID -> start time, recorded while running
        self.env = self._environment(env or {})
        # Our shim's state root (its LXC containers live in <root>/lxc); the caller may move it.
        self.lxcri_root = Path(self.env["PROXMOX_LXCRI_ROOT"])
        self._write_config()

    # -- paths -----------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return str(self.folder / "containerd.sock")

    @property
    def ttrpc_address(self) -> str:
        return self.address + ".ttrpc"

    @property
    def root_dir(self) -> Path:
        return self.folder / "root"

    @property
    def state_dir(self) -> Path:
        return self.folder / "state"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def bundle_dir(self, container_id: str, namespace: str | None = None) -> Path:
        return self.state_dir / TASK_DIR / (namespace or self.namespace) / container_id

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- set-up ----------------------------------------------------------------------------
    def _environment(self, extra: dict[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        path = env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(":")
        # The shim launcher is installed in /usr/local/bin; containerd looks shims up on its PATH.
        for d in ("/usr/local/bin", "/usr/local/sbin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
            if d not in path:
                path.append(d)
        front = ["/usr/local/bin"]
        if CHECKOUT_BIN.is_dir():
            # This checkout's launchers (`make setup`) before whichever /usr/local/bin holds.
            front.insert(0, str(CHECKOUT_BIN))
        env["PATH"] = ":".join(front + [p for p in path if p not in front])
        # Read by our shim (containerd passes its environment on to shims).
        env["PROXMOX_LXCRI_ROOT"] = str(self.folder / "lxcri")
        env.update(extra)
        return env

    def _write_config(self) -> None:
        self.config_path.write_text(
            "version = 2\n"
            f'root = "{self.root_dir}"\n'
            f'state = "{self.state_dir}"\n'
            + ("" if self.cri else f'disabled_plugins = ["{CRI_PLUGIN}"]\n')
            + "[grpc]\n"
            f'  address = "{self.address}"\n'
            "[ttrpc]\n"
            f'  address = "{self.ttrpc_address}"\n'
            "[debug]\n"
            f'  address = "{self.folder / "debug.sock"}"\n'
            '  level = "info"\n'
            + (self._cri_config() if self.cri else "")
        )

    def _cri_config(self) -> str:
        """The CRI plugin's tables (containerd 1.6 config version 2), the CNI configuration
        they point to, and the packaged handler appended as shipped."""
        assert self.cri is not None
        cni_dir = self.folder / "net.d"
        cni_dir.mkdir()
        bridge = self.cri.bridge or f"lxcri{uuid.uuid4().hex[:8]}"
        rnd = uuid.uuid4().int
        self.pod_subnet = self.cri.subnet or f"10.{200 + rnd % 50}.{(rnd >> 8) % 256}.0/24"
        # bridge + host-local; no ipMasq, so nothing touches iptables; host-local keeps its
        # allocations in the folder (dataDir) instead of /var/lib/cni/networks.
        (cni_dir / "10-lxcri.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": bridge, "plugins": [{
                "type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": self.pod_subnet}]],
                         "dataDir": str(self.folder / "cni-ipam")},
            }]}))
        cri = f'[plugins."{CRI_PLUGIN}"]'
        return (
            f"{cri}\n"
            f'  sandbox_image = "{self.cri.sandbox_image}"\n'
            # This VM's root lacks CAP_SYS_RESOURCE: no negative oom_score_adj (feasibility,
            # gotcha 1). No AppArmor or SELinux on this kernel.
            "  restrict_oom_score_adj = true\n"
            "  disable_apparmor = true\n"
            "  enable_selinux = false\n"
            f"{cri[:-1]}.containerd]\n"
            '  default_runtime_name = "runc"\n'
            f"{cri[:-1]}.containerd.runtimes.runc]\n"
            '  runtime_type = "io.containerd.runc.v2"\n'
            f"{cri[:-1]}.containerd.runtimes.runc.options]\n"
            f'  Root = "{self.folder / "runc"}"\n'
            f"{cri[:-1]}.cni]\n"
            f'  bin_dir = "{CNI_BIN}"\n'
            f'  conf_dir = "{cni_dir}"\n'
            "  max_conf_num = 1\n"
            + PACKAGED_RUNTIME.read_text()
        )

    # -- life cycle ------------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> None:
        """Start containerd and wait until ``ctr version`` answers."""
        if self.pid is not None:
            return
        with open(self.log_path, "ab") as log:
            argv = [self.containerd_bin, "--config", str(self.config_path)]
            if self.cri:
                # A network namespace of its own (and its shims', who inherit it): the CNI
                # bridge lives there. The loopback is up for the pods with host networking.
                argv = ["unshare", "--net", "--", "sh", "-c",
                        'ip link set lo up && exec "$@"', "containerd", *argv]
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                cwd=self.folder, start_new_session=True,  # our Ctrl-C/signals don't reach it
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"containerd exited with {self._proc.returncode}:\n"
                                   + self.log_text()[-4000:])
            if os.path.exists(self.address):
                r = self.ctr("version", timeout=5, check=False)
                if r.returncode == 0:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("containerd did not answer `ctr version`:\n"
                                   + self.log_text()[-4000:])
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop containerd only (SIGTERM, SIGKILL after ``timeout``); shims keep running."""
        self.record_shims()
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        """Stop containerd (not the shims) and start it again with the same config."""
        self.stop()
        self.start()

    def __enter__(self) -> PrivateContainerd:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()

    # -- ctr -------------------------------------------------------------------------------
    def ctr(self, *args: str, input: str | None = None, timeout: float = 60,
            check: bool = True, namespace: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [self.ctr_bin, "--address", self.address, "-n", namespace or self.namespace, *args]
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                           # ctr run attaches stdin: never let it read ours
                           stdin=subprocess.DEVNULL if input is None else None)
        if check and r.returncode != 0:
            raise CtrError(r.returncode, cmd, r.stdout, r.stderr)
        return r

    def import_image(self, tar: Path | str) -> None:
        self.ctr("images", "import", str(tar), timeout=120)

    def task_status(self, container_id: str) -> str | None:
        """The STATUS column of ``ctr task ls`` for ``container_id`` (None if no task)."""
        for line in self.ctr("task", "ls").stdout.splitlines()[1:]:
            parts = line.split()
            if parts and parts[0] == container_id:
                return parts[-1]
        return None

    def remove_container(self, container_id: str, namespace: str | None = None,
                         timeout: float = 15) -> None:
        """Kill the task (SIGKILL), delete it and the container; quiet if already gone."""
        ns = namespace or self.namespace
        self.record_shims()
        self.ctr("task", "kill", "-s", "SIGKILL", container_id, namespace=ns, check=False,
                 timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            # delete fails while the process is still exiting; retry until the deadline.
            r = self.ctr("task", "delete", container_id, namespace=ns, check=False,
                         timeout=timeout)
            if r.returncode == 0 or "not found" in r.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.ctr("containers", "delete", container_id, namespace=ns, check=False,
                 timeout=timeout)

    # -- shims -----------------------------------------------------------------------------
    def shim_pids(self) -> set[int]:
        """PIDs listening on the sockets named in this containerd's bundles' ``address`` files."""
        found: set[int] = set()
        for _, address in leaks.iter_bundle_addresses(self.state_dir / TASK_DIR):
            found |= leaks.socket_listeners(address)
        return found

    def shim_pid(self, container_id: str, namespace: str | None = None) -> int | None:
        """The shim daemon serving ``container_id`` (found via its bundle's ``address``)."""
        try:
            address = (self.bundle_dir(container_id, namespace) / "address").read_text().strip()
        except OSError:
            return None
        return leaks.topmost(leaks.socket_listeners(address))

    def record_shims(self) -> None:
        for pid in self.shim_pids():
            self._seen.setdefault(pid, leaks.start_time(pid))

    def attributed_processes(self) -> set[int]:
        """Every live process this containerd is responsible for, containerd itself excluded."""
        roots = {p for p, t in self._seen.items() if leaks.start_time(p) == t}
        roots |= self.shim_pids()
        roots |= set(leaks.processes_mentioning([str(self.folder)], env=True))
        own = leaks.own_lineage() | ({self.pid} if self.pid else set())
        return {p for p in leaks.descendants(roots - own) if p not in own and leaks.alive(p)}

    # -- clean-up --------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Remove all containers, stop containerd, kill leftover shims and their children by
        PID, undo mounts and delete the folder. Safe to call more than once."""
        if not self.folder.exists():
            return
        ids = {b.name for b in (self.state_dir / TASK_DIR).glob("*/*")}
        try:
            if self.pid is not None:
                self._remove_all_containers()
        finally:
            self.stop()
            self._kill_attributed()
            self._remove_cgroups(ids)
            self._unmount_all()
            self._remove_stale_shim_sockets()
            shutil.rmtree(self.folder, ignore_errors=True)

    def _remove_all_containers(self) -> None:
        try:
            namespaces = self.ctr("namespaces", "ls", "-q", timeout=10).stdout.split()
            for ns in namespaces:
                ids = self.ctr("containers", "ls", "-q", namespace=ns, timeout=10).stdout.split()
                for cid in ids:
                    self.remove_container(cid, namespace=ns, timeout=10)
        except (subprocess.SubprocessError, OSError):
            pass  # best effort: whatever survives is killed by PID below

    def _kill_attributed(self, timeout: float = 5.0) -> None:
        for _ in range(3):  # a dying shim may still have forked something: look again
            victims = self.attributed_processes()
            if not victims:
                return
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while any(leaks.alive(p) for p in victims) and time.monotonic() < deadline:
                time.sleep(0.02)

    @staticmethod
    def _remove_cgroups(ids: set[str]) -> None:
        # Containers whose shim was killed leave their (now empty) cgroups behind. Only the
        # ones named after our containers are removed; rmdir refuses non-empty cgroups.
        names = ids | {f"lxc.{kind}.{i}" for i in ids for kind in ("payload", "monitor")}
        for cg in leaks.cgroups_named(ids):
            if Path(cg).name not in names:
                continue
            for d in sorted((p for p in Path(cg).rglob("*") if p.is_dir()), reverse=True):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                Path(cg).rmdir()

    def _unmount_all(self) -> None:
        # Deepest (last mounted) first; lazy unmount as a fallback for busy mounts.
        for point in reversed(leaks.mounts_under([self.folder])):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)

    def _remove_stale_shim_sockets(self) -> None:
        # runc-style shims listen under /run/containerd/s/ (outside our folder); a killed shim
        # leaves its socket file there.
        for _, address in leaks.iter_bundle_addresses(self.state_dir / TASK_DIR):
            path = address.removeprefix("unix://")
            if (path.startswith("/") and not path.startswith(str(self.folder))
                    and not leaks.socket_listeners(path)):
                try:
                    os.unlink(path)
                except OSError:
                    pass
