"""Namespace paths of the spec checked against the namespace they must be (config-linux.md
"Namespaces": "the runtime MUST ... error if the path is not a namespace of that type"),
before LXC joins them: LXC's ``setns`` with a type argument of 0 would join whatever the file
is (an ``ipc`` entry naming a mount namespace was accepted, issue 13).

The type comes from the kernel: ``ioctl(fd, NS_GET_NSTYPE)`` on the opened file returns its
CLONE_NEW* flag (ioctl_ns(2), Linux 4.11). A file that is not a namespace fails it (ENOTTY).
"""

from __future__ import annotations

import fcntl
import os
from typing import Any

from runtime.errdefs import InvalidArgument, NotFound

#: NS_GET_NSTYPE = _IO(0xb7, 0x3) (include/uapi/linux/nsfs.h).
NS_GET_NSTYPE = 0xB703
#: The CLONE_NEW* flag of each OCI namespace type (include/uapi/linux/sched.h).
CLONE_FLAGS = {"mount": 0x00020000, "cgroup": 0x02000000, "uts": 0x04000000,
               "ipc": 0x08000000, "user": 0x10000000, "pid": 0x20000000,
               "network": 0x40000000, "time": 0x00000080}
_NAMES = {flag: name for name, flag in CLONE_FLAGS.items()}


def check_paths(spec: dict[str, Any]) -> None:
    """Each ``linux.namespaces[i].path`` exists and is a namespace of type ``[i].type``."""
    linux = spec.get("linux") or {}
    for i, ns in enumerate(linux.get("namespaces") or []):
        path, kind = ns.get("path"), ns.get("type")
        if not path or kind not in CLONE_FLAGS:
            continue
        field = f"linux.namespaces[{i}].path"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"{field}: {path}: no such namespace file") from None
        except OSError as exc:
            raise InvalidArgument(f"{field}: {path}: {exc.strerror}") from None
        try:
            got = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            raise InvalidArgument(f"{field}: {path} is not a namespace file") from None
        finally:
            os.close(fd)
        if got != CLONE_FLAGS[kind]:
            raise InvalidArgument(f"{field}: {path} is a {_NAMES.get(got, hex(got))} namespace, "
                                  f"not {kind}")
