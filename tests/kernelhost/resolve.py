"""Which Debian packages the kernel test host uses, resolved from the archive's index at run time.

Nothing here names a version: Debian keeps only the current kernel ABI (and often only the
newest revision) on the mirror, so any pinned version breaks at the next kernel upload
(issue 11: ``linux-kbuild-6.1=6.1.192-2`` vanished when bookworm-security moved to 6.1.192-3).
The resolution follows the packages' own relations:

- ``linux-image-amd64`` (the newest version the index holds) depends on exactly one
  ``linux-image-<abi> (= V)``: that gives the ABI and the kernel package version ``V``.
- ``linux-headers-<abi>`` must exist at ``V``; its ``linux-headers-*`` and ``linux-kbuild-*``
  dependencies are taken at that same version ``V`` (the common headers are ``(= V)``, kbuild
  only ``(>= V)``, but a kbuild of another version may not build against these headers).
- ``zfs-dkms`` at the newest version; ``zfsutils-linux`` at that same version and its libraries
  (its dependencies pinned ``(= Z)``, which are the ZFS libraries of that release: their
  sonames, and so their names, change between Debian releases).
- guest tools (apparmor) at the newest version.
- for a flavour with its own root filesystem (trixie, `pve9`): each named root filesystem
  package at the newest version. These versions key the root filesystem's cache entry; the
  libraries they pull in are whatever apt picks when it is built (recorded in its manifest).

The index is read through a ``Lookup``: name -> every stanza the archive has for it (in the
tests a dict; for real ``apt-cache show`` with the private apt configuration, see cache.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

Stanza = dict[str, str]
Lookup = Callable[[Sequence[str]], list[Stanza]]


class ResolveError(RuntimeError):
    """The archive's index lacks something the kernel test host needs; the message says what."""


# ------------------------------------------------------------------------------ deb822 / dpkg

def parse_stanzas(text: str) -> list[Stanza]:
    """Paragraphs of ``Field: value`` lines (Debian Policy 5.1); continuation lines joined."""
    out: list[Stanza] = []
    cur: Stanza = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
            cur, last = {}, None
        elif line[0] in " \t" and last is not None:
            cur[last] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            last = key.strip()
            cur[last] = value.strip()
    if cur:
        out.append(cur)
    return out


def _order(c: str) -> int:
    # dpkg's order(): '~' sorts before everything, even the end of the string; letters before
    # non-letters (deb-version(7), "Sorting").
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split(v: str) -> tuple[int, str, str]:
    epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
    upstream, dash, revision = rest.rpartition("-")
    if not dash:
        upstream, revision = rest, ""
    return int(epoch or "0"), upstream, revision


def compare_versions(a: str, b: str) -> int:
    """<0, 0 or >0 as Debian version ``a`` sorts before, equal to or after ``b`` (dpkg's rule)."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return ea - eb
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


@dataclass(frozen=True)
class Relation:
    name: str
    op: str | None = None
    version: str | None = None


_REL = re.compile(r"^\s*([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\s*(?:\(\s*(<<|<=|=|>=|>>)\s*"
                  r"([^)\s]+)\s*\))?\s*(?:\[.*\])?\s*$")


def parse_relations(text: str) -> list[list[Relation]]:
    """A Depends field: a list of alternatives, each a list of relations."""
    groups: list[list[Relation]] = []
    for group in text.split(","):
        alts = []
        for alt in group.split("|"):
            m = _REL.match(alt)
            if m:
                alts.append(Relation(m.group(1), m.group(2), m.group(3)))
        if alts:
            groups.append(alts)
    return groups


# ------------------------------------------------------------------------------ the index

class Index:
    """Every version of every package a lookup returned, queried by name."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._seen: dict[str, list[Stanza]] = {}

    def versions(self, name: str) -> list[Stanza]:
        if name not in self._seen:
            self.prefetch([name])
        return self._seen[name]

    def prefetch(self, names: Iterable[str]) -> None:
        want = [n for n in names if n not in self._seen]
        if not want:
            return
        for n in want:
            self._seen[n] = []
        for st in self._lookup(want):
            if st.get("Package") in self._seen:
                self._seen[st["Package"]].append(st)

    def newest(self, name: str, why: str) -> Stanza:
        found = self.versions(name)
        if not found:
            raise ResolveError(f"{name} ({why}) is not in the archive's index")
        best = found[0]
        for st in found[1:]:
            if compare_versions(st["Version"], best["Version"]) > 0:
                best = st
        return best

    def exact(self, name: str, version: str, why: str) -> Stanza:
        found = self.versions(name)
        for st in found:
            if st.get("Version") == version:
                return st
        have = ", ".join(sorted({st["Version"] for st in found})) or "none"
        raise ResolveError(f"{name} {version} ({why}) is not in the archive's index "
                           f"(versions there: {have})")


# ------------------------------------------------------------------------------ the result

@dataclass(frozen=True)
class Resolved:
    """What one kernel test host is made of; its ``key`` names the cache entry."""

    kernel_abi: str                        # 6.1.0-57-amd64
    kernel_version: str                    # 6.1.192-3 (the linux-image-<abi> package)
    headers: tuple[tuple[str, str], ...]   # linux-headers-<abi>, -common, linux-kbuild-*
    zfs_version: str                       # zfs-dkms and zfsutils-linux
    zfs_userland: tuple[tuple[str, str], ...]
    guest_tools: tuple[tuple[str, str], ...]
    flavour: str = "bookworm"
    rootfs: tuple[tuple[str, str], ...] = ()   # the root filesystem's named packages

    @property
    def kernel_key(self) -> str:
        """The kernel's cache directory: a new ABI or a new package revision is a new kernel."""
        return f"{self.flavour}-{self.kernel_abi}_{self.kernel_version}".replace(":", "%3a")

    @property
    def zfs_upstream(self) -> str:
        """OpenZFS's own version (2.1.11 of 2.1.11-1+deb12u1)."""
        return _split(self.zfs_version)[1]

    @property
    def key(self) -> str:
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def image_pin(self) -> tuple[str, str]:
        return (f"linux-image-{self.kernel_abi}", self.kernel_version)

    def zfs_build_pins(self) -> list[tuple[str, str]]:
        return [("zfs-dkms", self.zfs_version), *self.headers]

    def all_pins(self) -> list[tuple[str, str]]:
        return [self.image_pin(), *self.zfs_build_pins(), *self.zfs_userland, *self.guest_tools]

    def version_of(self, name: str) -> str | None:
        for n, v in (*self.rootfs, *self.guest_tools, *self.zfs_userland):
            if n == name:
                return v
        return None

    def describe(self) -> str:
        tools = ", ".join(f"{n} {v}" for n, v in self.guest_tools)
        shown = ("lxc", "systemd", "containerd", "runc", "criu", "apparmor")
        base = ", ".join(f"{n} {v}" for n, v in self.rootfs if n in shown)
        return (f"Debian {self.flavour}: kernel {self.kernel_abi} (linux-image "
                f"{self.kernel_version}), OpenZFS {self.zfs_version}"
                + (f", {tools}" if tools else "") + (f", {base}" if base else ""))

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        if not self.rootfs:
            # Entries of flavours without a root filesystem keep the key they had before it.
            del d["rootfs"]
        return d

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Resolved:
        def pairs(v: object) -> tuple[tuple[str, str], ...]:
            assert isinstance(v, list)
            return tuple((str(a), str(b)) for a, b in v)
        return cls(kernel_abi=str(d["kernel_abi"]), kernel_version=str(d["kernel_version"]),
                   headers=pairs(d["headers"]), zfs_version=str(d["zfs_version"]),
                   zfs_userland=pairs(d["zfs_userland"]), guest_tools=pairs(d["guest_tools"]),
                   flavour=str(d.get("flavour", "bookworm")),
                   rootfs=pairs(d.get("rootfs", [])))


@dataclass(frozen=True)
class Wanted:
    """The package names a flavour of the kernel test host is built from (no versions)."""

    flavour: str = "bookworm"
    kernel_meta: str = "linux-image-amd64"
    zfs_source: str = "zfs-dkms"
    zfs_utils: str = "zfsutils-linux"
    guest_tools: tuple[str, ...] = ("apparmor",)
    rootfs: tuple[str, ...] = ()   # packages of a root filesystem built for the guest


def resolve(lookup: Lookup, wanted: Wanted = Wanted()) -> Resolved:
    """Resolve every package of the kernel test host from the index (see the module doc)."""
    idx = Index(lookup)
    idx.prefetch([wanted.kernel_meta, wanted.zfs_source, wanted.zfs_utils, *wanted.guest_tools,
                  *wanted.rootfs])

    meta = idx.newest(wanted.kernel_meta, "the kernel metapackage")
    images = [r for alts in parse_relations(meta.get("Depends", "")) for r in alts[:1]
              if r.name.startswith("linux-image-") and r.op == "="]
    if len(images) != 1 or images[0].version is None:
        raise ResolveError(f"{wanted.kernel_meta} {meta['Version']} does not depend on exactly "
                           f"one linux-image-<abi> (= version): Depends: {meta.get('Depends')}")
    image, kver = images[0].name, images[0].version
    abi = image.removeprefix("linux-image-")
    via = f"for {wanted.kernel_meta} {meta['Version']} -> {image} {kver}"
    idx.prefetch([image, f"linux-headers-{abi}"])
    idx.exact(image, kver, via)
    hdr = idx.exact(f"linux-headers-{abi}", kver, f"the kernel headers {via}")
    build = [r for alts in parse_relations(hdr.get("Depends", "")) for r in alts[:1]
             if r.name.startswith(("linux-headers-", "linux-kbuild-"))]
    idx.prefetch(r.name for r in build)
    headers: list[tuple[str, str]] = [(f"linux-headers-{abi}", kver)]
    for r in build:
        headers.append((r.name, idx.exact(r.name, kver, f"needed by linux-headers-{abi} "
                                                        f"{kver}")["Version"]))
    if not any(n.endswith("-common") for n, _ in headers[1:]):
        raise ResolveError(f"linux-headers-{abi} {kver} names no linux-headers-*-common "
                           f"dependency: Depends: {hdr.get('Depends')}")

    zsrc = idx.newest(wanted.zfs_source, "the OpenZFS module source")
    zv = zsrc["Version"]
    utils = idx.exact(wanted.zfs_utils, zv, f"the userland of {wanted.zfs_source} {zv}")
    libs = [r.name for alts in parse_relations(utils.get("Depends", "")) for r in alts[:1]
            if r.op == "=" and r.version == zv]
    idx.prefetch(libs)
    userland = [(wanted.zfs_utils, zv)]
    userland += [(n, idx.exact(n, zv, f"needed by {wanted.zfs_utils} {zv}")["Version"])
                 for n in libs]

    tools = [(n, idx.newest(n, "a guest tool")["Version"]) for n in wanted.guest_tools]
    rootfs = [(n, idx.newest(n, "a root filesystem package")["Version"]) for n in wanted.rootfs]
    return Resolved(kernel_abi=abi, kernel_version=kver, headers=tuple(headers),
                    zfs_version=zv, zfs_userland=tuple(userland), guest_tools=tuple(tools),
                    flavour=wanted.flavour, rootfs=tuple(rootfs))
