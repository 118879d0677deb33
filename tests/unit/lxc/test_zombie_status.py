"""The exit status read from a dead, unreaped process (LXC's monitor hung, or a restored
program's monitor did not reap it yet)."""

from __future__ import annotations

import os
import signal
import time

from runtime.lxc.backend import zombie_status


def _zombie(action: str) -> int:
    pid = os.fork()
    if pid == 0:
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(7)
    for _ in range(500):  # until it is a zombie
        if zombie_status(pid) is not None:
            break
        time.sleep(0.01)
    return pid


def test_an_exit_and_a_signal_death_read_like_a_shell() -> None:
    for action, want in (("exit", 7), ("kill", 128 + signal.SIGKILL)):
        pid = _zombie(action)
        try:
            assert zombie_status(pid) == want
        finally:
            os.waitpid(pid, 0)
        assert zombie_status(pid) is None  # reaped: gone
    assert zombie_status(os.getpid()) is None  # alive: not a zombie
