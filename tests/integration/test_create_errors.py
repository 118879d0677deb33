"""Errors of the container init's set-up fail Create, as under runc (issue 13).

runc's ``create`` runs its init through every set-up step up to the exec FIFO wait, including
the executable's lookup (runc 1.1), so a missing or non-executable program, a cwd that is a
file, an unmapped user, an rlimit or a capability set the kernel refuses or a seccomp filter
libseccomp refuses fail ``runc create``, the shim's Create RPC and ``ctr run`` before
anything runs. Each case here runs on this runtime and on runc, through containerd
(``ctr run --config``) and through the OCI CLI (``proxmox-lxcri create`` next to
``runc create``): both fail at create with the problem named, and nothing is left (no
container, task, LXC container, cgroup, state directory, mount or process). The cases runc
accepts are pinned too: a missing cwd is made, an ambient capability that is not
inheritable is not raised, a prestart hook may put the program in place.

Nothing is killed by name; every test uses its own ids and temp dirs and cleans up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runtime.lxc.mount import mounted_under, unmount
from runtime.lxc.rootfs import DEFAULT_PATH
from tests.harness import leaks
from tests.harness.containerd import PrivateContainerd
from tests.harness.rootfs import temporary_busybox_rootfs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (LXC containers, mount(2))"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc not installed"),
]

OURS = "io.containerd.proxmox.v2"
RUNC = "io.containerd.runc.v2"
CLI = [sys.executable, "-c", "from shim.operator_cli import main; main()"]
REPO = Path(__file__).resolve().parents[2]
#: A user namespace whose mapped range does not include uid/gid 5000.
USERNS = {"namespaces": [{"type": "user"}],
          "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 1000}],
          "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 1000}]}


def _userns(spec: dict[str, Any], user: dict[str, Any]) -> None:
    spec["linux"]["namespaces"].append({"type": "user"})
    spec["linux"]["uidMappings"] = USERNS["uidMappings"]
    spec["linux"]["gidMappings"] = USERNS["gidMappings"]
    spec["process"]["user"] = user


def _args(*args: str) -> Callable[[dict[str, Any]], None]:
    return lambda spec: spec["process"].update(args=list(args))


def _seccomp_arg_index(spec: dict[str, Any]) -> None:
    spec["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}


@dataclass(frozen=True)
class Case:
    """A spec change that fails create on both runtimes; ``message``: a regex both runtimes'
    errors match (runc's wording where this runtime has it)."""

    name: str
    edit: Callable[[dict[str, Any]], None]
    message: str


CASES = [
    Case("missing-program", _args("nosuch"),
         r'exec: "nosuch": executable file not found in \$PATH'),
    Case("missing-path", _args("/bin/nosuch"),
         r'exec: "/bin/nosuch": stat /bin/nosuch: no such file or directory'),
    Case("not-executable", _args("/etc/passwd"), r'exec: "/etc/passwd": permission denied'),
    Case("cwd-is-a-file", lambda s: s["process"].update(cwd="/etc/passwd"),
         r"(?i)mkdir /etc/passwd: not a directory"),
    Case("rlimit-above-the-host", lambda s: s["process"].update(rlimits=[
        {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1 << 40}]),
         r"(?i)rlimit.*(7|RLIMIT_NOFILE).*operation not permitted"),
    # Inheritable beyond the bounding set: capset(2) refuses it (EPERM).
    Case("capability-the-kernel-refuses",
         lambda s: s["process"]["capabilities"].update(inheritable=["CAP_SYS_ADMIN"]),
         r"(?i)(unable to apply caps|capset .*): operation not permitted"),
    Case("unmapped-uid", lambda s: _userns(s, {"uid": 5000, "gid": 0}),
         r"cannot set uid to unmapped user in user namespace"),
    Case("unmapped-gid", lambda s: _userns(s, {"uid": 0, "gid": 5000}),
         r"cannot set gid to unmapped user in user namespace"),
    Case("unmapped-additional-gid",
         lambda s: _userns(s, {"uid": 0, "gid": 0, "additionalGids": [5000]}),
         r"(?i)setgroups: invalid argument"),
    Case("seccomp-libseccomp-refuses", _seccomp_arg_index,
         r"(?i)(args\[0\]\.index: must be between 0 and 5|up to 6 arguments \(9 given\))"),
]


def _ids(cases: list[Case]) -> list[str]:
    return [c.name for c in cases]


def found(message: str, stderr: str) -> bool:
    """``message`` in an error line, whose quotes the CLIs' and ctr's log format may escape."""
    return re.search(message.replace('"', '\\\\?"'), stderr) is not None


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    with temporary_busybox_rootfs("createerr-bb-") as root:
        yield root


# --- through containerd --------------------------------------------------------------------


@pytest.fixture(params=[OURS, RUNC], ids=["proxmox", "runc"])
def runtime(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def spec_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="lxcri-createerr-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def ctr_spec(ctd: PrivateContainerd, cid: str, spec_dir: Path, rootfs: Path,
             edit: Callable[[dict[str, Any]], None]) -> Path:
    """containerd's default spec (``ctr oci spec``) with ``edit``, for ``ctr run --config``
    (which takes no image: the root is a busybox directory)."""
    spec = json.loads(ctd.ctr("oci", "spec").stdout)
    spec["root"] = {"path": str(rootfs), "readonly": False}
    # What `ctr run IMAGE` takes from the image; runc finds no program without a PATH.
    spec["process"].update(args=["true"], terminal=False, env=[f"PATH={DEFAULT_PATH}"])
    spec["linux"].pop("cgroupsPath", None)  # "/default" would be one cgroup for every test
    spec["hostname"] = cid
    edit(spec)
    path = spec_dir / f"{cid}.json"
    path.write_text(json.dumps(spec))
    return path


def ctr_run(ctd: PrivateContainerd, runtime: str, cid: str,
            config: Path) -> subprocess.CompletedProcess[str]:
    return ctd.ctr("run", "--rm", "--runtime", runtime, "--config", str(config), cid,
                   check=False, timeout=60)


def residue(ctd: PrivateContainerd, cid: str) -> list[str]:
    """What is left of container ``cid`` on either runtime: containerd's container and task,
    this runtime's LXC container, state directory and mounts, and any cgroup or process
    naming it."""
    left = [f"container {cid}"] if cid in ctd.ctr("containers", "ls", "-q").stdout.split() \
        else []
    left += [f"LXC container {c}" for c in leaks.lxc_containers([ctd.lxcri_root / "lxc"])
             if c.endswith(cid)]
    left += [f"mount {m}" for m in leaks.mounts_under([ctd.bundle_dir(cid), ctd.lxcri_root])]
    left += [f"process {p}: {c}" for p, c in leaks.processes_mentioning([cid]).items()]
    left += [f"cgroup {c}" for c in leaks.cgroups_named([cid])]
    if (ctd.lxcri_root / "containers" / ctd.namespace / cid).exists():
        left.append("shim state directory")
    return left


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_containerd_create_fails_and_leaves_nothing(
        containerd: PrivateContainerd, runtime: str, unique_id: str, spec_dir: Path,
        rootfs: Path, case: Case) -> None:
    if case.name.startswith("unmapped"):
        # The harness's private root is a 0700 temp dir: the container's mapped root could
        # not reach its state below (LXC: "Could not access ..."). A node's state root is
        # traversable; so is this one from now on.
        containerd.folder.chmod(0o711)
    try:
        r = ctr_run(containerd, runtime, unique_id,
                    ctr_spec(containerd, unique_id, spec_dir, rootfs, case.edit))
        assert r.returncode != 0, r.stdout
        # The shim's Create failed: ctr never had a task to start.
        assert "failed to create shim task" in r.stderr, r.stderr
        assert found(case.message, r.stderr), r.stderr
        assert containerd.task_status(unique_id) is None
        assert residue(containerd, unique_id) == []
    finally:
        containerd.remove_container(unique_id)


def test_containerd_a_missing_cwd_is_made(containerd: PrivateContainerd, runtime: str,
                                          unique_id: str, spec_dir: Path,
                                          rootfs: Path) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["process"].update(cwd=f"/{unique_id}/deeper",
                               args=["sh", "-c", "pwd; stat -c %a ."])

    try:
        r = ctr_run(containerd, runtime, unique_id,
                    ctr_spec(containerd, unique_id, spec_dir, rootfs, edit))
        assert (r.returncode, r.stdout) == (0, f"/{unique_id}/deeper\n755\n"), r.stderr
    finally:
        containerd.remove_container(unique_id)
        shutil.rmtree(rootfs / unique_id, ignore_errors=True)


def test_containerd_an_ambient_capability_not_inheritable_is_not_raised(
        containerd: PrivateContainerd, runtime: str, unique_id: str, spec_dir: Path,
        rootfs: Path) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["capabilities"]["ambient"] = ["CAP_KILL"]
        spec["process"]["args"] = ["grep", "CapAmb", "/proc/self/status"]

    try:
        r = ctr_run(containerd, runtime, unique_id,
                    ctr_spec(containerd, unique_id, spec_dir, rootfs, edit))
        assert (r.returncode, r.stdout) == (0, "CapAmb:\t0000000000000000\n"), r.stderr
    finally:
        containerd.remove_container(unique_id)


# --- through the OCI CLI, next to runc's -----------------------------------------------------


@dataclass
class Oci:
    """One OCI runtime's CLI with a state root of this test's own."""

    name: str
    base: Path
    rootfs: Path

    @property
    def root(self) -> Path:
        return self.base / "root"

    def argv(self) -> list[str]:
        if self.name == "runc":
            return ["runc", "--root", str(self.root)]
        return [*CLI, "--root", str(self.root)]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        # create's stdio is the container's (runc's pass-through): files, not pipes that the
        # held init would keep open.
        out, err = self.base / f"out-{uuid.uuid4().hex[:6]}", self.base / "err"
        with open(out, "w") as o, open(err, "w") as e:
            rc = subprocess.run([*self.argv(), *args], stdout=o, stderr=e, timeout=60,
                                cwd=REPO, stdin=subprocess.DEVNULL).returncode
        return subprocess.CompletedProcess(args, rc, out.read_text(), err.read_text())

    def bundle(self, edit: Callable[[dict[str, Any]], None]) -> Path:
        """``runc spec``'s config (runc's own base) with the rootfs and ``edit``."""
        b = self.base / f"b-{uuid.uuid4().hex[:6]}"
        b.mkdir()
        subprocess.run(["runc", "spec", "--bundle", str(b)], check=True)
        spec = json.loads((b / "config.json").read_text())
        spec["root"] = {"path": str(self.rootfs), "readonly": False}
        spec["process"].update(terminal=False, args=["true"])
        edit(spec)
        (b / "config.json").write_text(json.dumps(spec))
        return b

    def leftovers(self, cid: str) -> list[str]:
        found = [f"mount {m}" for m in mounted_under(self.base)]
        found += [f"cgroup {c}" for c in leaks.cgroups_named([cid])]
        found += [f"process {p}: {c}" for p, c in leaks.processes_mentioning([cid]).items()]
        if self.root.exists():
            found += [f"state {p.relative_to(self.root)}" for p in self.root.rglob("*")
                      if cid in p.name]
        return found


@pytest.fixture(params=["proxmox-lxcri", "runc"])
def oci(request: pytest.FixtureRequest, rootfs: Path) -> Iterator[Oci]:
    base = Path(tempfile.mkdtemp(prefix="createerr-"))
    base.chmod(0o755)
    made = Oci(str(request.param), base, rootfs)
    try:
        yield made
    finally:
        for d in (made.root,):
            if d.exists():
                for state in d.rglob("state.json"):
                    made("delete", "--force", state.parent.name)
        for point in reversed(mounted_under(base)):
            unmount(point)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_oci_create_fails_and_leaves_nothing(oci: Oci, case: Case) -> None:
    cid = f"ce{uuid.uuid4().hex[:8]}"
    try:
        r = oci("create", "--bundle", str(oci.bundle(case.edit)), cid)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert found(case.message, r.stderr), r.stderr
        state = oci("state", cid)
        assert state.returncode != 0, state.stdout
        assert oci.leftovers(cid) == []
    finally:
        oci("delete", "--force", cid)


def test_oci_a_missing_cwd_is_made_at_create(oci: Oci) -> None:
    cid = f"ce{uuid.uuid4().hex[:8]}"
    made = f"made-{oci.name}"

    def edit(spec: dict[str, Any]) -> None:
        spec["process"].update(cwd=f"/{made}/here", args=["true"])

    try:
        assert oci("create", "--bundle", str(oci.bundle(edit)), cid).returncode == 0
        assert (oci.rootfs / made / "here").is_dir()
        assert oci("start", cid).returncode == 0
    finally:
        oci("delete", "--force", cid)
        shutil.rmtree(oci.rootfs / made, ignore_errors=True)


def test_oci_a_prestart_hook_can_put_the_program_in_place(oci: Oci) -> None:
    """The create-time hooks run before the init's set-up and the program's lookup, as
    runc runs them before its init's last steps (a GPU hook mounting its tools, say)."""
    cid = f"ce{uuid.uuid4().hex[:8]}"
    program = oci.rootfs / f"hooked-{cid}"

    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["args"] = [f"/{program.name}"]
        spec["hooks"] = {"prestart": [{"path": "/bin/sh", "args": [
            "sh", "-c", f"cp /bin/busybox {program}"]}]}

    try:
        r = oci("create", "--bundle", str(oci.bundle(edit)), cid)
        assert r.returncode == 0, r.stderr
        assert '"created"' in oci("state", cid).stdout
    finally:
        oci("delete", "--force", cid)
        program.unlink(missing_ok=True)


def test_oci_with_a_hook_a_missing_program_still_fails_create(oci: Oci) -> None:
    cid = f"ce{uuid.uuid4().hex[:8]}"

    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["args"] = ["nosuch"]
        spec["hooks"] = {"createRuntime": [{"path": "/bin/true"}]}

    try:
        r = oci("create", "--bundle", str(oci.bundle(edit)), cid)
        assert r.returncode == 1, r.stderr
        assert found(CASES[0].message, r.stderr), r.stderr
        assert oci("state", cid).returncode != 0
        assert oci.leftovers(cid) == []
    finally:
        oci("delete", "--force", cid)


def test_oci_a_filter_forbidding_write_fails_create_here_and_start_on_runc(oci: Oci) -> None:
    """The listed difference (docs/oci-support.md): after its seccomp filter the init still
    writes "ready" on its gate, so a filter that forbids write(2) fails create here; runc's
    create succeeds and its init dies opening its exec FIFO at start."""
    cid = f"ce{uuid.uuid4().hex[:8]}"

    def edit(spec: dict[str, Any]) -> None:
        spec["process"]["noNewPrivileges"] = True
        spec["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["write", "openat"], "action": "SCMP_ACT_ERRNO"}]}

    try:
        r = oci("create", "--bundle", str(oci.bundle(edit)), cid)
        if oci.name == "runc":
            assert r.returncode == 0, r.stderr
        else:
            assert r.returncode == 1
            assert "before it reported its set-up" in r.stderr, r.stderr
            assert oci.leftovers(cid) == []
    finally:
        oci("delete", "--force", cid)
