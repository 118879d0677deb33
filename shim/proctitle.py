"""Names under which ``ps`` shows the shim daemon and the zygote.

Both are Python processes started as ``python -S -c '…'``, so without this every daemon (and the
zygote) would look alike in ``ps``, and the fallback daemon would look like a hung ``start``.
The runc shim's daemon shows as ``containerd-shim-runc-v2 -namespace NS -id ID -address A``
(its manager re-executes itself with those flags), and its ``comm`` is that name cut to the
kernel's 15 characters, ``containerd-shim``. The daemon here shows the same way under its own
binary name (:func:`daemon_title`), and the zygote as ``proxmox-lxcri-zygote <key>``.

setproctitle (PyPI) rewrites the process's argv area (what ``/proc/<pid>/cmdline`` and ``ps``
read) and sets ``comm`` with ``prctl(PR_SET_NAME)``. ``SPT_NOENV`` keeps it out of the
environment area: ``/proc/<pid>/environ`` stays readable (operators and the test harness use
it); the title is cut at the length of the original argv, which the launchers make ample (the
interpreter, the launcher script's path and containerd's flags, longer than the title; the zygote
gets room explicitly, shim/zygote_client.py). Best effort: a missing module only leaves the old
name.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

DAEMON_NAME = "containerd-shim-proxmox-v2"
ZYGOTE_NAME = "proxmox-lxcri-zygote"
#: ``comm`` of the zygote (at most 15 characters).
ZYGOTE_COMM = "lxcri-zygote"


def daemon_title(namespace: str, id: str, address: str) -> str:
    # -address last: if the argv area is short, it is what gets cut.
    title = f"{DAEMON_NAME} -namespace {namespace} -id {id}"
    return f"{title} -address {address}" if address else title


def zygote_title(key: str) -> str:
    return f"{ZYGOTE_NAME} {key}"


def set_title(title: str, comm: str | None = None) -> bool:
    """Set the command line ``ps`` shows (and ``comm``: ``comm`` if given, else the title's
    first 15 characters). False when it could not be done."""
    os.environ["SPT_NOENV"] = "1"
    try:
        import setproctitle
    except ImportError as exc:
        os.environ.pop("SPT_NOENV", None)
        log.warning("cannot set the process title (setproctitle missing: %s)", exc)
        return False
    try:
        setproctitle.setproctitle(title)
        if comm is not None:
            setproctitle.setthreadtitle(comm)  # the main thread's name is the process's comm
    except Exception as exc:  # the title is cosmetic: never fail the caller
        log.warning("cannot set the process title: %s", exc)
        return False
    finally:
        # Read once when setproctitle first runs; children (LXC tools, hooks) need not see it.
        os.environ.pop("SPT_NOENV", None)
    return True
