"""The container init (runtime.lxc.owninit) against the real LXC tools: it applies the process
settings and execve()s the program, which is PID 1 of the container as under runc.

What a user sees: exit statuses (the monitor's), PID-1 signal semantics (a signal without a
handler is ignored; nothing kills on its own), stdio, arguments with spaces, the five
capability sets and the supplementary groups. What CRIU needs: PID 1's executable lies inside
the container, and empty stdio is the container's own /dev/null.
"""

# The backend tests' fixtures are imported by name, and pytest passes them back as parameters
# of the same name (F811 would flag each test).
# ruff: noqa: F811
from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime import errdefs
from runtime.lxc import owninit
from runtime.types import CreateConfig, Stdio
from tests.integration.test_lxc_backend import (  # noqa: F401  (fixtures)
    Env,
    assert_gone,
    busybox,
    env,
    open_reader,
    read_fifo_after_exit,
    start_when_ready,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (LXC containers, mount(2))"),
    pytest.mark.skipif(not owninit.BINARY.is_file(), reason="lxcri-init not built (make setup)"),
]


def own(config: CreateConfig) -> CreateConfig:
    """A container CRIU may dump (only its default AppArmor profile differs)."""
    return dataclasses.replace(config, checkpointable=True)


async def run_to_exit(env: Env, args: list[str], stdio: Stdio | None = None) -> int:
    handle = await env.create(own(env.config(args, stdio=stdio or Stdio())))
    await handle.start()
    return await asyncio.wait_for(handle.wait(), 20)


async def run_capturing(env: Env, args: list[str], *, stdout: bool = True, mount: bool = True,
                        edit: Callable[[CreateConfig], None] | None = None) -> tuple[int, bytes]:
    """Run ``args`` with the own init; its exit status and what it wrote to its stderr (and
    stdout, unless ``stdout`` is False: then that stays empty), one FIFO for both."""
    out = env.fifo(f"out-{uuid.uuid4().hex[:6]}")
    reader = open_reader(out)
    try:
        config = own(env.config(args, mount=mount, stdio=Stdio(
            stdout=str(out) if stdout else "", stderr=str(out))))
        if edit is not None:
            edit(config)
        handle = await env.create(config)
        await handle.start()
        status = await asyncio.wait_for(handle.wait(), 20)
        return status, read_fifo_after_exit(reader)
    finally:
        os.close(reader)


@pytest.mark.asyncio
async def test_the_program_is_pid_1_and_nothing_of_the_init_is_left(env: Env) -> None:
    script = ("readlink /proc/1/exe; tr '\\0' ' ' < /proc/1/cmdline; echo; echo pid=$$; "
              "ls /proc/1/fd | wc -l")
    status, output = await run_capturing(env, ["sh", "-c", script], edit=None)
    assert status == 0
    lines = output.decode().splitlines()
    assert lines[0] == "/bin/busybox"  # the program itself, not an init
    assert lines[1].startswith("sh -c readlink")
    assert lines[2] == "pid=1"
    # stdin, stdout, stderr: nothing the init held is inherited.
    assert lines[3] == "3"


@pytest.mark.asyncio
async def test_exit_status_arguments_with_spaces_and_stdout(env: Env) -> None:
    status, output = await run_capturing(env, ["sh", "-c", 'printf "[%s]" "$0" "$1"; exit 7',
                                               "a b", "c  d"])
    assert status == 7
    assert output == b"[a b][c  d]"


@pytest.mark.asyncio
async def test_term_trap_runs_and_a_program_without_handler_ignores_term(env: Env) -> None:
    handle, reader = await start_when_ready(env, "trap 'exit 3' TERM; echo ready; "
                                                 "sleep 60 & wait")
    try:
        handle.kill(signal.SIGTERM)
        assert await asyncio.wait_for(handle.wait(), 10) == 3
    finally:
        os.close(reader)

    # PID 1 without a TERM handler: the kernel drops the signal (pid_namespaces(7)); nothing
    # else kills it either (LXC's init used to SIGKILL everything a second after TERM).
    handle = await env.create(env.config(["sleep", "60"]))
    await handle.start()
    await asyncio.sleep(0.2)
    handle.kill(signal.SIGTERM)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(handle.wait()), 1.5)
    handle.kill(signal.SIGKILL)
    assert await asyncio.wait_for(handle.wait(), 10) == 137


@pytest.mark.asyncio
async def test_a_trap_that_exits_ends_the_container_at_once(env: Env) -> None:
    # With a child still running: no init waits for orphans.
    handle, reader = await start_when_ready(env, "trap 'exit 9' USR1; echo ready; "
                                                 "sleep 60 & wait")
    try:
        handle.kill(signal.SIGUSR1)
        assert await asyncio.wait_for(handle.wait(), 5) == 9
    finally:
        os.close(reader)


@pytest.mark.asyncio
async def test_a_signal_death_of_the_program_is_128_plus_the_signal(env: Env) -> None:
    # A fault's signal is forced even on PID 1 (kill -SEGV $$ is not: PID 1 ignores it).
    handle = await env.create(env.config(["sleep", "60"]))
    await handle.start()
    await asyncio.sleep(0.2)
    handle.kill(signal.SIGKILL)
    assert await asyncio.wait_for(handle.wait(), 10) == 128 + signal.SIGKILL


@pytest.mark.asyncio
async def test_empty_stdio_is_the_containers_own_dev_null(env: Env) -> None:
    # The mount id of fd 0 (no stdin path) equals that of /dev/null opened inside the
    # container: not the host's /dev/null, which CRIU could not dump.
    script = ("exec 3</dev/null; a=$(grep mnt_id /proc/self/fdinfo/0); "
              "b=$(grep mnt_id /proc/self/fdinfo/3); c=$(grep mnt_id /proc/self/fdinfo/2); "
              '[ "$a" = "$b" ] && echo stdin-is-container-null >&2; '
              '[ "$c" != "$b" ] && echo stderr-is-the-fifo >&2; exit 0')
    status, output = await run_capturing(env, ["sh", "-c", script], stdout=False)
    assert status == 0
    assert output.split() == [b"stdin-is-container-null", b"stderr-is-the-fifo"]


@pytest.mark.asyncio
async def test_unprivileged_user_gets_its_groups_and_all_five_capability_sets(env: Env) -> None:
    def as_1000(config: CreateConfig) -> None:
        config.spec["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [10, 1234]}
        config.spec["process"]["capabilities"] = {
            "bounding": ["CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_KILL"],
            "effective": ["CAP_NET_BIND_SERVICE"], "permitted": ["CAP_NET_BIND_SERVICE"],
            "inheritable": ["CAP_NET_BIND_SERVICE"], "ambient": ["CAP_NET_BIND_SERVICE"]}
        config.spec["process"]["noNewPrivileges"] = True

    # mount=False: the bundle's rootfs, whose / is searchable by others (the shared busybox
    # dir is a 0700 temporary directory).
    script = "id -u; grep -E '^(Groups|Cap...|NoNewPrivs):' /proc/self/status; exit 5"
    status, output = await run_capturing(env, ["sh", "-c", script], mount=False, edit=as_1000)
    assert status == 5, output.decode()
    fields = dict(line.split(":", 1) for line in output.decode().splitlines()[1:])
    assert output.decode().splitlines()[0] == "1000"
    assert fields["Groups"].split() == ["10", "1234"]
    bind = 1 << 10  # CAP_NET_BIND_SERVICE
    assert {k: int(v, 16) for k, v in fields.items() if k.startswith("Cap")} == {
        "CapInh": bind, "CapPrm": bind, "CapEff": bind, "CapAmb": bind,
        "CapBnd": bind | 1 << 0 | 1 << 5}
    assert fields["NoNewPrivs"].strip() == "1"


@pytest.mark.asyncio
async def test_delete_leaves_nothing(env: Env) -> None:
    handle = await env.create(own(env.config(["true"])))
    init_dir = env.state_dir / owninit.DIR_NAME
    assert (init_dir / "init.lxc").is_file()
    await handle.start()
    assert await asyncio.wait_for(handle.wait(), 20) == 0
    await handle.delete()
    assert_gone(env, handle.name, handle.pid)
    assert not init_dir.exists()


@pytest.mark.asyncio
async def test_missing_init_binary_is_a_clear_error_that_leaves_nothing(
        env: Env, tmp_path: Path) -> None:
    with pytest.raises(errdefs.FailedPrecondition, match="lxcri-init.c"):
        owninit.prepare(tmp_path, ["true"], Stdio(), "", binary=tmp_path / "absent")
    assert not (tmp_path / owninit.DIR_NAME).exists()


@pytest.mark.asyncio
async def test_masked_paths_are_masked_with_one_entry_each(env: Env) -> None:
    # A file and a directory of /proc that this host has (its kernel decides which exist).
    file = next(p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list")
                if os.path.isfile(p))
    directory = next((p for p in ("/proc/acpi", "/proc/scsi", "/proc/asound")
                      if os.path.isdir(p)), None)
    if directory is None:
        pytest.skip("no maskable directory in this host's /proc")

    def mask(config: CreateConfig) -> None:
        config.spec["linux"]["maskedPaths"] = [file, directory, "/proc/nonexistent"]

    script = (f"wc -c < {file}; ls -A {directory} | wc -l; "
              f"grep -c -e ' {file} ' -e ' {directory} ' /proc/self/mountinfo")
    status, output = await run_capturing(env, ["sh", "-c", script], edit=mask)
    assert status == 0
    # The file reads empty (a /dev/null bind), the directory lists nothing (a tmpfs), and each
    # has exactly one mount.
    assert output.split() == [b"0", b"0", b"2"]


@pytest.mark.asyncio
async def test_read_only_paths_are_read_only(env: Env) -> None:
    def read_only(config: CreateConfig) -> None:
        config.spec["linux"]["readonlyPaths"] = ["/proc/sys", "/proc/nonexistent"]

    script = ("{ echo 1 > /proc/sys/kernel/sysrq; } 2>/dev/null && echo writable || echo ro; "
              "grep -c ' /proc/sys ' /proc/self/mountinfo")
    status, output = await run_capturing(env, ["sh", "-c", script], edit=read_only)
    assert status == 0
    assert output.split() == [b"ro", b"1"]


@pytest.mark.asyncio
async def test_a_program_killed_from_outside_reports_137(env: Env) -> None:
    # Not through the runtime's kill (the OOM killer, an operator's kill -9): the monitor
    # reports the signal (lxc-start would say 0).
    handle = await env.create(own(env.config(["sleep", "60"])))
    await handle.start()
    await asyncio.sleep(0.2)
    os.kill(handle.pid, signal.SIGKILL)
    assert await asyncio.wait_for(handle.wait(), 10) == 137


@pytest.mark.asyncio
@pytest.mark.parametrize(("propagation", "tag"), [
    ("private", ""), ("rprivate", ""), ("shared", "shared:"), ("rshared", "shared:"),
    ("slave", "-shared:"), ("rslave", "-shared:"), ("unbindable", "unbindable")])
async def test_rootfs_propagation_is_the_specs_after_the_pivot(
        env: Env, propagation: str, tag: str) -> None:
    def set_propagation(config: CreateConfig) -> None:
        config.spec["linux"]["rootfsPropagation"] = propagation

    # The optional fields of / in mountinfo (proc(5)): shared:N, master:N, unbindable.
    script = "awk '$5 == \"/\" {for (i = 7; $i != \"-\"; i++) printf \"%s \", $i}' " \
             "/proc/self/mountinfo; echo"
    status, output = await run_capturing(env, ["sh", "-c", script], edit=set_propagation)
    assert status == 0, output
    fields = output.decode().split()
    if tag.startswith("-"):
        # A slave of nothing (the rootfs has no shared master here): no longer shared.
        assert not any(f.startswith(tag[1:]) for f in fields), fields
    elif tag:
        assert any(f.startswith(tag) for f in fields), fields
    else:
        assert fields == []


@pytest.mark.asyncio
async def test_masked_and_read_only_fifos_are_handled_without_opening_them(env: Env) -> None:
    # A FIFO opened for reading would block until a writer came (fifo(7)): create hung until
    # the gate timed out. Masked: a /dev/null bind; read-only: a read-only bind.
    def with_fifos(config: CreateConfig) -> None:
        rootfs = config.bundle / "rootfs"
        for name in ("masked-fifo", "ro-fifo"):
            (rootfs / name).unlink(missing_ok=True)
            os.mkfifo(rootfs / name)
        config.spec["linux"]["maskedPaths"] = ["/masked-fifo"]
        config.spec["linux"]["readonlyPaths"] = ["/ro-fifo"]

    script = ("[ -c /masked-fifo ] && echo masked-is-null; "
              "grep -c ' /ro-fifo .*ro,' /proc/self/mountinfo")
    status, output = await run_capturing(env, ["sh", "-c", script], mount=False,
                                         edit=with_fifos)
    assert status == 0, output
    assert output.split() == [b"masked-is-null", b"1"]


@pytest.mark.asyncio
async def test_an_oom_kill_ends_the_program_with_137(env: Env) -> None:
    # The program is the only and biggest process: the OOM killer's choice (LXC's init, bigger
    # than a small program, used to be killed instead, and the container ended with 1).
    def small(config: CreateConfig) -> None:
        config.spec["linux"]["resources"] = {"memory": {"limit": 32 << 20, "swap": 32 << 20}}

    status, _ = await run_capturing(env, ["awk", 'BEGIN { s = "x"; while (1) s = s s }'],
                                    edit=small)
    assert status == 137


@pytest.mark.asyncio
async def test_the_inits_directory_is_read_only_inside(env: Env) -> None:
    script = ("{ echo x > /dev/.lxcri/init.lxc; } 2>/dev/null && echo init-writable; "
              "touch /dev/.lxcri/new 2>/dev/null && echo dir-writable; echo done")
    status, output = await run_capturing(env, ["sh", "-c", script])
    assert (status, output) == (0, b"done\n")
