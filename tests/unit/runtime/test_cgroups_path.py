"""linux.cgroupsPath in containerd's two forms → the cgroup below each hierarchy's root."""

from __future__ import annotations

import pytest

from runtime.cgroups_path import expand_slice, is_systemd_form, resolve
from runtime.errdefs import InvalidArgument


@pytest.mark.parametrize("value, expected", [
    ("", ""),
    (None, ""),
    ("/kubepods/burstable/pod0a/c1", "kubepods/burstable/pod0a/c1"),
    ("/default/web", "default/web"),
    ("//a/./b/", "a/b"),
    # kubeadm's systemd driver: containerd's slice:prefix:name.
    ("kubepods-besteffort-pod0a.slice:cri-containerd:c1",
     "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0a.slice/"
     "cri-containerd-c1.scope"),
    ("system.slice:docker:abc", "system.slice/docker-abc.scope"),
    (":runc:abc", "system.slice/runc-abc.scope"),  # runc's default slice
    ("-.slice:p:n", "p-n.scope"),  # the root slice
    # No prefix: runc still joins with "-" (measured with runc 1.1.15 under systemd 257).
    ("system.slice::abc", "system.slice/-abc.scope"),
    ("machine.slice::sub.slice", "machine.slice/sub.slice"),  # a slice as the unit itself
])
def test_resolve(value: str | None, expected: str) -> None:
    assert resolve(value) == expected


def test_relative_paths_go_below_the_runtimes_own_cgroup() -> None:
    assert resolve("pod/c1", "/system.slice/containerd.service") == \
        "system.slice/containerd.service/pod/c1"
    assert resolve("pod/c1", "/") == "pod/c1"


def test_expand_slice() -> None:
    assert expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert expand_slice("-.slice") == ""


@pytest.mark.parametrize("value, message", [
    ("/a/../../etc", "must not contain '..'"),
    ("/", "names the root cgroup"),
    ("a--b.slice:p:n", "not a valid slice name"),
    ("x.slice:p:", "the name in slice:prefix:name is empty"),
    ("x.slice:p/q:n", "not a valid unit name"),
    ("/a\nb", "newline"),
    (7, "must be a string"),
])
def test_bad_paths_are_refused(value: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        resolve(value)


def test_forms() -> None:
    assert is_systemd_form("kubepods.slice:cri-containerd:x")
    assert not is_systemd_form("/kubepods/x")
    assert not is_systemd_form("a:b")
