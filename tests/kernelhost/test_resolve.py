"""The kernel test host's package resolution (issue 11) and its cache entries, on the host.

The resolver is fed package indexes written here, in the archive's own format, for the cases
that broke or will break a pinned setup: only the Debian revision moved, a new ABI appeared,
and a new kernel whose headers have not reached the mirror. The cache's fallback is driven
with a real ``apt-get update`` against an address where no archive answers.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kernelhost import cache, config
from tests.kernelhost.resolve import (
    Resolved,
    ResolveError,
    Stanza,
    compare_versions,
    parse_stanzas,
    resolve,
)


# Synthetic index data: nothing below is downloaded or pinned. Only the relations and the order
# of these versions matter to the resolver, so they are built from their moving parts.
def abi(n: int, series: str = "6.1") -> str:
    """A kernel ABI name, e.g. abi(56) -> 6.1.0-56-amd64."""
    return f"{series}.0-{n}-amd64"


def kv(patch: int, rev: int, series: str = "6.1") -> str:
    """A kernel package version, e.g. kv(192, 3) -> 6.1.192-3."""
    return f"{series}.{patch}-{rev}"


def kernel(abi: str, ver: str, *, headers: bool = True, kbuild: str = "6.1") -> str:
    """Index stanzas of one kernel upload as Debian's linux/linux-signed-amd64 write them."""
    text = f"""
Package: linux-image-amd64
Source: linux-signed-amd64 ({ver.replace('-', '+')})
Version: {ver}
Depends: linux-image-{abi} (= {ver})

Package: linux-image-{abi}
Source: linux-signed-amd64 ({ver.replace('-', '+')})
Version: {ver}
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool

Package: linux-kbuild-{kbuild}
Source: linux
Version: {ver}
Depends: libc6 (>= 2.34)
"""
    if headers:
        common = abi.removesuffix("-amd64") + "-common"
        text += f"""
Package: linux-headers-{abi}
Source: linux
Version: {ver}
Depends: linux-headers-{common} (= {ver}), linux-kbuild-{kbuild} (>= {ver}),
 linux-compiler-gcc-12-x86

Package: linux-headers-{common}
Source: linux
Version: {ver}
"""
    return text


def zv(minor: int, patch: int, rev: str = "1") -> str:
    """An OpenZFS package version, e.g. zv(3, 4) -> 2.3.4-1."""
    return f"2.{minor}.{patch}-{rev}"


def av(patch: int, rev: int) -> str:
    """An apparmor package version, e.g. av(4, 2) -> 3.0.4-2."""
    return f"3.0.{patch}-{rev}"


ZFS_V = zv(1, 11, "1+deb12u1")
APPARMOR_NEW, APPARMOR_OLD = av(8, 3), av(8, 2)
LIBS_BOOKWORM = ("libnvpair3linux", "libuutil3linux", "libzfs4linux", "libzpool5linux")


def zfs_index(version: str = ZFS_V, libs: Sequence[str] = LIBS_BOOKWORM) -> str:
    """Index stanzas of one zfs-linux upload (zfsutils-linux pins its libraries with ``=``)
    and two apparmor versions."""
    pins = ", ".join(f"{lib} (= {version})" for lib in libs)
    return f"""
Package: zfs-dkms
Source: zfs-linux
Version: {version}
Depends: dkms (>> 2.1.1.2-5), file, libc6-dev | libc-dev

Package: zfsutils-linux
Source: zfs-linux
Version: {version}
Depends: {pins}, python3, libblkid1 (>= 2.16)
""" + "".join(f"""
Package: {lib}
Source: zfs-linux
Version: {version}
""" for lib in libs) + f"""
Package: apparmor
Version: {APPARMOR_NEW}

Package: apparmor
Version: {APPARMOR_OLD}
"""


ZFS = zfs_index()


def lookup_of(*texts: str) -> tuple[list[list[str]], object]:
    stanzas = [s for t in texts for s in parse_stanzas(t)]
    asked: list[list[str]] = []

    def lookup(names: Sequence[str]) -> list[Stanza]:
        asked.append(list(names))
        return [s for s in stanzas if s["Package"] in names]
    return asked, lookup


def test_only_the_debian_revision_moved() -> None:
    # bookworm-security replaced 6.1.192-2 by 6.1.192-3 under the same ABI (issue 11); the
    # point release still carries an older kernel: the newest one wins, headers follow it.
    _, lookup = lookup_of(kernel(abi(56), kv(176, 1)),
                          kernel(abi(56), kv(192, 3)), ZFS)
    r = resolve(lookup)  # type: ignore[arg-type]
    assert (r.kernel_abi, r.kernel_version) == (abi(56), kv(192, 3))
    assert dict(r.headers) == {f"linux-headers-{abi(56)}": kv(192, 3),
                               f"linux-headers-{abi(56).removesuffix('-amd64')}-common": kv(192, 3),
                               "linux-kbuild-6.1": kv(192, 3)}
    assert r.zfs_version == ZFS_V and r.zfs_upstream == ZFS_V.split("-")[0]
    assert [n for n, _ in r.zfs_userland] == ["zfsutils-linux", "libnvpair3linux",
                                              "libuutil3linux", "libzfs4linux",
                                              "libzpool5linux"]
    assert r.guest_tools == (("apparmor", APPARMOR_NEW),)
    # Only the revision moved, yet it is another kernel: another cache directory, so the ZFS
    # module is rebuilt for it.
    old = resolve(lookup_of(kernel(abi(56), kv(192, 2)), ZFS)[1])  # type: ignore[arg-type]
    assert old.kernel_key != r.kernel_key and old.key != r.key


def test_a_new_abi_appeared() -> None:
    _, lookup = lookup_of(kernel(abi(56), kv(192, 3)),
                          kernel(abi(57), kv(200, 1)), ZFS)
    r = resolve(lookup)  # type: ignore[arg-type]
    assert (r.kernel_abi, r.kernel_version) == (abi(57), kv(200, 1))
    assert (f"linux-headers-{abi(57).removesuffix('-amd64')}-common", kv(200, 1)) in r.headers
    assert r.image_pin() == (f"linux-image-{abi(57)}", kv(200, 1))
    assert "6.1.0-57-amd64 (linux-image 6.1.200-1)" in r.describe()


def test_headers_missing_for_the_new_kernel_is_a_clear_error() -> None:
    _, lookup = lookup_of(kernel(abi(56), kv(192, 3)),
                          kernel(abi(57), kv(200, 1), headers=False), ZFS)
    with pytest.raises(ResolveError, match=r"linux-headers-6\.1\.0-57-amd64 6\.1\.200-1 \(the "
                       r"kernel headers for linux-image-amd64 6\.1\.200-1 -> "
                       r"linux-image-6\.1\.0-57-amd64 6\.1\.200-1\) is not in the archive's "
                       r"index \(versions there: none\)"):
        resolve(lookup)  # type: ignore[arg-type]


def test_kbuild_must_match_the_kernel_version() -> None:
    # linux-headers only says kbuild (>= V); one of another version is not taken.
    text = kernel(abi(57), kv(200, 1)).replace(
        "Package: linux-kbuild-6.1\nSource: linux\nVersion: 6.1.200-1",
        "Package: linux-kbuild-6.1\nSource: linux\nVersion: 6.1.201-1")
    with pytest.raises(ResolveError, match=r"linux-kbuild-6\.1 6\.1\.200-1 .*versions there: "
                                           r"6\.1\.201-1"):
        resolve(lookup_of(text, ZFS)[1])  # type: ignore[arg-type]


def test_zfs_userland_names_follow_the_release() -> None:
    # trixie's libraries have other sonames (libzfs6linux, ...): taken from the Depends.
    version = zv(3, 9)
    libs = ("libnvpair3linux", "libuutil3linux", "libzfs6linux", "libzpool6linux")
    r = resolve(lookup_of(kernel(abi(9, "6.12"), kv(57, 1, "6.12")),  # type: ignore[arg-type]
                          zfs_index(version, libs))[1])
    assert r.zfs_version == version
    assert ("libzfs6linux", version) in r.zfs_userland


@pytest.mark.parametrize("a,b,want", [
    (kv(192, 3), kv(192, 2), 1), (kv(192, 2), kv(200, 1), -1), ("1.0~rc1", "1.0", -1),
    (ZFS_V, zv(1, 11), 1), ("1:0.1", "2.0", 1), ("1.0", "1.0-0", 0),
    (APPARMOR_NEW, APPARMOR_NEW, 0), (kv(192, 3).replace("-", "+"), kv(192, 3), 1),
])
def test_compare_versions_examples(a: str, b: str, want: int) -> None:
    got = compare_versions(a, b)
    assert (got > 0) - (got < 0) == want


_VERSION = st.from_regex(r"\A([0-9]:)?[0-9][0-9a-z.+~]{0,6}(-[0-9a-z.+~]{1,5})?\Z")


@settings(max_examples=150, deadline=None)
@given(_VERSION, _VERSION)
def test_compare_versions_agrees_with_dpkg(a: str, b: str) -> None:
    got = compare_versions(a, b)
    lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False).returncode == 0
    eq = subprocess.run(["dpkg", "--compare-versions", a, "eq", b], check=False).returncode == 0
    assert (got < 0, got == 0) == (lt, eq)


# ------------------------------------------------------------------------------ cache entries

def _fake_entry(root: Path, r: Resolved) -> cache.GuestImage:
    home = cache.kernel_home(root, r)
    for p in (home / "kernel" / "root", home / f"zfs-{r.zfs_version}" / "root",
              root / "tools-x" / "root"):
        p.mkdir(parents=True, exist_ok=True)
    (home / "kernel" / "vmlinux").write_bytes(b"\x7fELF")
    (home / "initramfs-1.cpio.gz").write_bytes(b"")
    return cache.GuestImage(home / "kernel" / "vmlinux", home / "initramfs-1.cpio.gz",
                            (home / f"zfs-{r.zfs_version}" / "root", root / "tools-x" / "root",
                             home / "kernel" / "root"), r)


def _resolved(ver: str) -> Resolved:
    return resolve(lookup_of(kernel(abi(56), ver), ZFS)[1])  # type: ignore[arg-type]


@pytest.fixture
def unreachable_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache whose apt sources point where nothing listens (port 9, discard)."""
    root = tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv("LXCRI_KERNEL_CACHE", str(root))
    monkeypatch.setattr(config, "BOOKWORM", dataclasses.replace(
        config.BOOKWORM, apt_sources="deb http://127.0.0.1:9/debian bookworm main\n"))
    return root


def test_unreachable_archive_uses_the_newest_complete_entry(unreachable_archive: Path) -> None:
    root = unreachable_archive
    old, new = _resolved(kv(192, 2)), _resolved(kv(192, 3))
    cache._record(root, _fake_entry(root, old))
    time.sleep(0.01)
    cache._record(root, _fake_entry(root, new))
    # An entry whose files went missing is not complete and is passed over.
    (root / "entries" / "broken.json").write_text(json.dumps(
        {"resolved": new.to_json(), "paths": ["nope/vmlinux", "nope/i", "nope/root"]}))
    image = cache.prepare()
    assert image.resolved == new
    assert image.note is not None and "Debian archive cannot be reached" in image.note
    assert "using the newest cached kernel test host" in image.note


def test_unreachable_archive_and_no_cache_says_what_is_missing(
        unreachable_archive: Path) -> None:
    with pytest.raises(cache.BuildError) as e:
        cache.prepare()
    msg = str(e.value)
    assert "Debian archive cannot be reached" in msg
    assert "holds no complete kernel test host" in msg
    assert "linux-image-amd64" in msg and "zfs-dkms" in msg and "apparmor" in msg


def test_prune_keeps_the_newest_two_entries(tmp_path: Path) -> None:
    root = tmp_path
    rs = [_resolved(f"6.1.192-{i}") for i in (1, 2, 3)]
    for r in rs:
        cache._record(root, _fake_entry(root, r))
        (root / "debs").mkdir(exist_ok=True)
        (root / "debs" / f"linux-image-6.1.0-56-amd64_{r.kernel_version}_amd64.deb").touch()
        time.sleep(0.01)
    removed = cache.prune(root, keep=2)
    assert not cache.kernel_home(root, rs[0]).exists()
    assert cache.kernel_home(root, rs[1]).exists() and cache.kernel_home(root, rs[2]).exists()
    assert (root / "tools-x").exists()  # still used by the kept entries
    assert sorted(p.name for p in (root / "entries").glob("*.json")) == sorted(
        f"{r.key}.json" for r in rs[1:])
    assert sorted(p.name for p in (root / "debs").iterdir()) == [
        "linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb",
        "linux-image-6.1.0-56-amd64_6.1.192-3_amd64.deb"]
    assert cache.kernel_home(root, rs[0]) in removed


def test_prune_keeps_the_newest_two_entries_of_each_flavour(tmp_path: Path) -> None:
    root = tmp_path
    old = [_resolved(f"6.1.192-{i}") for i in (1, 2, 3)]
    trixie = dataclasses.replace(_resolved(kv(192, 9)), flavour="trixie",
                                 rootfs=(("lxc", "1:6.0.4-4"),))
    cache._record(root, _fake_entry(root, trixie))  # the oldest use of all
    time.sleep(0.01)
    for r in old:
        cache._record(root, _fake_entry(root, r))
        time.sleep(0.01)
    cache.prune(root, keep=2)
    assert cache.kernel_home(root, trixie).exists()
    assert not cache.kernel_home(root, old[0]).exists()
    assert sorted(p.name for p in (root / "entries").glob("*.json")) == sorted(
        f"{r.key}.json" for r in (trixie, *old[1:]))
    rec = cache._entries(root, "trixie")[0][1]["resolved"]
    assert isinstance(rec, dict) and Resolved.from_json(rec) == trixie
