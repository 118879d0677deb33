"""The in-container init's configuration and the files it shares with the runtime."""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path

from runtime.lxc import config as lxcconf
from runtime.lxc import criu_stdio, owninit, restore
from runtime.types import Stdio
from tests.unit.lxc.specs import CTR_DEFAULT, MINIMAL


def _params(**extra: object) -> lxcconf.Params:
    return lxcconf.Params(name="c1", rootfs="/r", gate="/gate.sh", log_file="/l",
                          **extra)  # type: ignore[arg-type]


def test_own_init_mounts_its_directory_on_dev_and_becomes_init_cmd() -> None:
    lines = lxcconf.lxc_config(copy.deepcopy(CTR_DEFAULT), _params(own_init_dir="/run/x y/init"))
    entry = ("lxc.mount.entry", r"/run/x\040y/init dev/.lxcri none bind,ro,create=dir 0 0")
    at = lines.index(entry)
    assert lines[at + 1] == ("lxc.init.cmd", "/dev/.lxcri/init.lxc")
    # After the spec's own mounts (ctr's /dev/shm, /dev/mqueue, …), which it must not shadow.
    spec_mounts = [i for i, line in enumerate(lines)
                   if line[0] == "lxc.mount.entry" and " dev/" in line[1] and i != at]
    assert spec_mounts and max(spec_mounts) < at


def test_without_own_init_nothing_changes_and_a_restore_has_no_gate() -> None:
    plain = lxcconf.lxc_config(copy.deepcopy(MINIMAL), _params())
    assert not [k for k, _ in plain if k == "lxc.init.cmd"]
    assert ("lxc.hook.start-host", "/gate.sh") in plain
    restored = lxcconf.lxc_config(copy.deepcopy(MINIMAL), lxcconf.Params(
        name="c1", rootfs="/r", gate="", log_file="/l", own_init_dir="/d"))
    assert not [k for k, _ in restored if k == "lxc.hook.start-host"]


def test_prepare_writes_argv_process_filter_stdio_marks_and_the_exec_fifo(
        tmp_path: Path) -> None:
    binary = tmp_path / "bin"
    binary.write_bytes(b"\x7fELF")
    d = owninit.prepare(tmp_path, ["sh", "-c", "echo a b"], Stdio(stdout="/fifo"),
                        "uid 0\n", b"\0" * 8, binary=binary)
    assert (d / "init.lxc").read_bytes() == b"\x7fELF"
    assert (d / "argv").read_bytes() == b"sh\0-c\0echo a b\0"
    assert (d / "process").read_text() == "uid 0\n"
    assert (d / "seccomp").read_bytes() == b"\0" * 8
    assert (d / "stdio").read_text() == "n-n"
    assert stat.S_ISFIFO((d / owninit.EXEC_FIFO).stat().st_mode)
    # An exec's files sit inside, with a link to the container's filter.
    x, inside = owninit.prepare_exec(d, ["id"], "uid 1\n")
    assert x.parent == d and inside == f"/dev/.lxcri/{x.name}"
    assert (x / "argv").read_bytes() == b"id\0" and (x / "stdio").read_text() == "---"
    assert os.path.samefile(x / "seccomp", d / "seccomp")


def test_criu_errors_are_read_from_its_log(tmp_path: Path) -> None:
    log = tmp_path / "restore.log"
    log.write_text("(00.012) Warn  (criu/x.c:1): nothing\n"
                   "(00.100) Error (criu/mount.c:2545): mnt: No mapping for 33:(null) mountpoint\n"
                   "(00.101) Error (criu/cr-restore.c:2400): Restoring FAILED.\n")
    assert restore.criu_errors(log) == ("mnt: No mapping for 33:(null) mountpoint; "
                                        "Restoring FAILED.")
    assert restore.criu_errors(tmp_path / "absent") == ""


def test_criu_keys_of_a_pipe_and_a_fifo(tmp_path: Path) -> None:
    r, w = os.pipe()
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY)
    try:
        assert criu_stdio.fd_key(r) == f"pipe:[{os.fstat(r).st_ino}]"
        mnt_id = next(int(line.split()[1]) for line in
                      Path(f"/proc/self/fdinfo/{writer}").read_text().splitlines()
                      if line.startswith("mnt_id:"))
        # CRIU's own spelling (criu/files-reg.c): hexadecimal mount id and inode.
        assert criu_stdio.fd_key(writer) == f"file[{mnt_id:x}:{os.stat(fifo).st_ino:x}]"
        keys = criu_stdio.keys_of((r, writer, writer), ("/in", "/out", ""))
        assert keys == {0: criu_stdio.fd_key(r), 1: criu_stdio.fd_key(writer)}
    finally:
        for fd in (r, w, reader, writer):
            os.close(fd)


def test_dump_files_and_inherit_lines(tmp_path: Path) -> None:
    keys = {0: "pipe:[7]", 1: "file[2a:ff]", 2: "file[2a:ff]"}
    conf = criu_stdio.write_dump_files(tmp_path / "images", keys)
    # Only files are external; a pipe is dumped as a pipe.
    assert conf.read_text() == "external file[2a:ff]\n"
    assert criu_stdio.read_keys(tmp_path / "images") == keys
    assert criu_stdio.read_keys(tmp_path / "absent") == {}
    # stdout and stderr share a FIFO: one descriptor for the key.
    assert criu_stdio.inherit_lines(keys, {0: 10, 1: 11, 2: 12}) == [
        "inherit-fd fd[10]:pipe:[7]", "inherit-fd fd[11]:file[2a:ff]"]


def test_masked_paths_get_the_one_entry_that_fits_when_the_kind_is_known() -> None:
    spec = copy.deepcopy(CTR_DEFAULT)
    spec["linux"]["maskedPaths"] = ["/proc/acpi", "/proc/kcore", "/proc/absent"]
    kinds = {"/proc/acpi": "dir", "/proc/kcore": "file"}
    lines = lxcconf.lxc_config(spec, _params(own_init_dir="/d",
                                             path_kind=lambda p: kinds.get(p, "")))
    masks = [v for k, v in lines if k == "lxc.mount.entry" and v.split()[1].startswith("proc/")
             and ("tmpfs" in v or v.startswith("/dev/null"))]
    assert masks == [
        "tmpfs proc/acpi tmpfs ro,nosuid,nodev,noexec,size=0,optional 0 0",
        "/dev/null proc/kcore none bind,optional 0 0",
    ]
    # Without the host fact both entries stay, and the kernel refuses the one that does not fit.
    plain = lxcconf.lxc_config(spec, _params())
    assert sum(1 for k, v in plain if k == "lxc.mount.entry" and " proc/acpi " in v) == 2


def test_read_only_paths_are_made_by_the_mount_hook_for_criu() -> None:
    # Mount entries otherwise: no process per path on the common path.
    spec = copy.deepcopy(CTR_DEFAULT)
    own = lxcconf.lxc_config(spec, _params(own_init_dir="/d", criu=True))
    assert not [v for k, v in own if k == "lxc.mount.entry" and ",ro," in f",{v.split()[3]},"
                and "bind" in v and v.split()[1] != "dev/.lxcri"]
    hook = [v for k, v in own if k == "lxc.hook.mount"]
    assert len(hook) == 1 and "p /proc/sys" in hook[0] and "p /proc/bus" in hook[0]
    plain = lxcconf.lxc_config(spec, _params(own_init_dir="/d"))
    assert [v for k, v in plain if k == "lxc.mount.entry" and v.split()[1] == "proc/sys"]


def test_a_checkpointable_container_gets_lxcs_fixed_apparmor_default() -> None:
    from runtime.lxc import security

    spec = copy.deepcopy(MINIMAL)
    own = dict(lxcconf.lxc_config(spec, _params(
        own_init_dir="/d", apparmor=True, default_apparmor=security.CRIU_APPARMOR_PROFILE)))
    assert own["lxc.apparmor.profile"] == "lxc-container-default-cgns"
    assert dict(lxcconf.lxc_config(spec, _params(apparmor=True)))[
        "lxc.apparmor.profile"] == "generated"
    # A profile the spec names is kept either way.
    spec["process"]["apparmorProfile"] = "cri-containerd.apparmor.d"
    own = dict(lxcconf.lxc_config(spec, _params(
        own_init_dir="/d", apparmor=True, default_apparmor=security.CRIU_APPARMOR_PROFILE)))
    assert own["lxc.apparmor.profile"] == "cri-containerd.apparmor.d"
