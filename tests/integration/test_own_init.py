"""Containers run with the in-container init (runtime.lxc.owninit), the mode the runtime uses
for containers that may be checkpointed with CRIU, against the real LXC tools.

What a user sees must not change with the init: exit statuses, signals, stdio, arguments with
spaces. What changes is what CRIU needs: PID 1's executable lies inside the container, and
PID 1 holds no file from outside it.
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
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (LXC containers, mount(2))"),
    pytest.mark.skipif(not owninit.BINARY.is_file(), reason="lxcri-init not built (make setup)"),
]


def own(config: CreateConfig) -> CreateConfig:
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
async def test_pid_1_is_the_init_inside_the_container_and_holds_no_host_file(env: Env) -> None:
    script = ("readlink /proc/1/exe; ls -l /proc/1/fd | awk '/->/ {print $NF}' | sort -u; "
              "echo pid=$$")
    status, output = await run_capturing(env, ["sh", "-c", script])
    assert status == 0
    lines = output.decode().splitlines()
    assert lines[0] == owninit.INIT_PATH
    # PID 1's descriptors: only the container's /dev/null (the FIFO is the program's).
    assert lines[1:-1] == ["/dev/null"]
    assert lines[-1] == "pid=2"


@pytest.mark.asyncio
async def test_exit_status_arguments_with_spaces_and_stdout(env: Env) -> None:
    status, output = await run_capturing(env, ["sh", "-c", 'printf "[%s]" "$0" "$1"; exit 7',
                                               "a b", "c  d"])
    assert status == 7
    assert output == b"[a b][c  d]"


@pytest.mark.asyncio
async def test_sigterm_is_forwarded_and_sigkill_gives_137(env: Env) -> None:
    handle = await env.create(own(env.config(["sh", "-c", "trap 'exit 3' TERM; "
                                              "sleep 60 & wait"])))
    await handle.start()
    await asyncio.sleep(0.3)
    handle.kill(signal.SIGTERM)
    assert await asyncio.wait_for(handle.wait(), 10) == 3

    handle = await env.create(own(env.config(["sleep", "60"])))
    await handle.start()
    await asyncio.sleep(0.2)
    handle.kill(signal.SIGKILL)
    assert await asyncio.wait_for(handle.wait(), 10) == 137


@pytest.mark.asyncio
async def test_a_signal_death_of_the_program_is_128_plus_the_signal(env: Env) -> None:
    assert await run_to_exit(env, ["sh", "-c", "kill -USR1 $$"]) == 128 + signal.SIGUSR1


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
async def test_unprivileged_user_still_reports_its_status(env: Env) -> None:
    def as_1000(config: CreateConfig) -> None:
        config.spec["process"]["user"] = {"uid": 1000, "gid": 1000}

    # mount=False: the bundle's rootfs, whose / is searchable by others (the shared busybox
    # dir is a 0700 temporary directory).
    status, output = await run_capturing(env, ["sh", "-c", "id -u; exit 5"], mount=False,
                                         edit=as_1000)
    assert (status, output.decode()) == (5, "1000\n"), output.decode()


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
        owninit.prepare(tmp_path, ["true"], Stdio(), binary=tmp_path / "absent")
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
async def test_an_init_killed_from_outside_reports_137(env: Env) -> None:
    # Not through the runtime's kill (the OOM killer, an operator's kill -9): the init records
    # nothing, and lxc-start would say 0.
    handle = await env.create(own(env.config(["sleep", "60"])))
    await handle.start()
    await asyncio.sleep(0.2)
    os.kill(handle.pid, signal.SIGKILL)
    assert await asyncio.wait_for(handle.wait(), 10) == 137
