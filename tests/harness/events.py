"""containerd's task events as ``ctr events`` prints them, collected in the background."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time

from tests.harness.containerd import PrivateContainerd
from tests.harness.waiting import wait_for


class Events:
    """``ctr events`` of one private containerd, from construction until :meth:`close`."""

    def __init__(self, ctd: PrivateContainerd) -> None:
        self.proc = subprocess.Popen(["ctr", "--address", ctd.address, "events"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout or []),
                         daemon=True).start()
        time.sleep(0.3)

    def of(self, id: str) -> list[tuple[str, dict[str, object]]]:
        out = []
        for line in list(self.lines):
            m = re.search(r" (/tasks/\S+) (\{.*\})$", line)
            if m and f'"container_id":"{id}"' in m.group(2):
                out.append((m.group(1), json.loads(m.group(2))))
        return out

    def assert_one_oom_before_exit(self, id: str) -> None:
        """One ``/tasks/oom`` for one kill (runc's shim sends one; the v1 eventfd fires dozens
        of times), published before ``/tasks/exit`` so that the CRI plugin gives the container
        the reason OOMKilled. Wait may return before the exit event is delivered
        (shim-protocol.md 3.3), hence the wait."""
        wait_for(lambda: {"/tasks/oom", "/tasks/exit"} <= {t for t, _ in self.of(id)},
                 what="/tasks/oom and /tasks/exit")
        topics = [t for t, _ in self.of(id)]
        assert topics.index("/tasks/oom") < topics.index("/tasks/exit"), topics
        assert topics.count("/tasks/oom") == 1, topics

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
