"""CRIU's own words from its output or log: the lines ``Error (<file>:<line>): <message>``.

Shared by the storage layer (``criu check``, dumps) and the LXC backend (restores), which both
report a failure in CRIU's words.
"""

from __future__ import annotations

import re

# "(00.012) Error (criu/vdso.c:381): vdso: …", also after a prefix ("pie: 24: Error (…): …").
_ERROR = re.compile(r"(?:^|\s)Error\s*\([^)]*\):\s*(.*)$")
_HELPER_EXIT = re.compile(r"^exited, status=\d+$")


def errors(text: str) -> list[str]:
    """CRIU's error messages, in order (the first is the most specific)."""
    found = []
    for line in text.splitlines():
        m = _ERROR.search(line)
        message = m.group(1).strip() if m else ""
        # "exited, status=1" (criu/util.c) only reports a helper's exit; the reason follows.
        if message and not _HELPER_EXIT.match(message):
            found.append(message)
    return found
