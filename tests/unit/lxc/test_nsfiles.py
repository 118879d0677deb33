"""Namespace paths are checked for their type by the kernel (NS_GET_NSTYPE)."""

from __future__ import annotations

import pytest

from runtime import errdefs
from runtime.lxc import nsfiles


def _spec(kind: str, path: str) -> dict[str, object]:
    return {"linux": {"namespaces": [{"type": "mount"}, {"type": kind, "path": path}]}}


def test_a_path_of_the_right_type_passes() -> None:
    nsfiles.check_paths(_spec("ipc", "/proc/self/ns/ipc"))
    nsfiles.check_paths(_spec("network", "/proc/self/ns/net"))
    nsfiles.check_paths(_spec("pid", "/proc/self/ns/pid"))


@pytest.mark.parametrize(("kind", "path", "error", "message"), [
    ("ipc", "/proc/self/ns/mnt", errdefs.InvalidArgument,
     r"linux.namespaces\[1\].path: /proc/self/ns/mnt is a mount namespace, not ipc"),
    ("network", "/etc/hostname", errdefs.InvalidArgument, "is not a namespace file"),
    ("uts", "/nonexistent/ns", errdefs.NotFound, "no such namespace file"),
])
def test_a_wrong_path_is_refused_naming_the_field(kind: str, path: str,
                                                  error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        nsfiles.check_paths(_spec(kind, path))
