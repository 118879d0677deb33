"""Fetch, unpack and build what the guest needs; cached outside the checkout.

Nothing is pinned: resolve.py picks every package from the archive's index at run time, and
each resolution is a cache entry. Layout under :func:`config.cache_root` (each step idempotent,
built in a ``*.tmp`` sibling and renamed into place under an ``flock``, so concurrent test runs
never see a half-built tree)::

    apt/                          private apt config + lists (contrib for ZFS)
    debs/                         the resolved .debs, as `apt-get download` wrote them
    kernel-<flavour>-<abi>_<ver>/kernel/vmlinux       ELF kernel, booted through its PVH entry
    kernel-<...>/kernel/root/usr/lib/modules/<abi>/... overlay layer: modules + modules.dep
    kernel-<...>/zfs-<zfs version>/root/...           overlay layer: stripped zfs .ko files,
                                                      modules.dep covering both, ZFS userland
    kernel-<...>/zfs-<zfs version>/build.log          configure + make output of the build
    kernel-<...>/initramfs-<hash>.cpio.gz             busybox /init + 9p/overlay modules
    tools-<hash>/root/...                             overlay layer: apparmor_parser, aa-status
    entries/<key>.json                                one complete image: its resolution, its
                                                      paths; mtime = last use

A new kernel package (a new ABI or only a new Debian revision) is a new ``kernel-*`` directory,
so the ZFS module is rebuilt for it once. Entries beyond the newest ``config.KEEP_ENTRIES`` are
removed with what only they use. When the archive cannot be reached, the newest complete entry
is used (``GuestImage.note`` says so).

Layers use /usr paths only: the host is merged-/usr, and a real ``lib`` or ``sbin`` directory
in an upper layer would hide the host's ``/lib -> usr/lib`` symlink in the guest.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.kernelhost import config
from tests.kernelhost.config import Flavour
from tests.kernelhost.resolve import Resolved, ResolveError, Stanza, parse_stanzas, resolve

HERE = Path(__file__).resolve().parent
BUSYBOX = Path("/bin/busybox")
# Start of an xz stream: vmlinuz is a bzImage whose payload is xz-compressed (vm-test-host.md,
# "Kernel": find FD 37 7A 58 5A 00 and decompress one stream).
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame (RFC 8878, 3.1.1)


class BuildError(RuntimeError):
    """A cache step failed. The message says which step and why (with the command's output)."""


class ArchiveUnreachable(BuildError):
    """``apt-get update`` of the private lists failed: the archive cannot be reached."""


class UnresolvedError(BuildError):
    """The archive's index lacks a package the kernel test host needs (resolve.py's error)."""


class DownloadError(BuildError):
    """``apt-get download`` failed (a version gone from the mirror, or the network)."""


@dataclass(frozen=True)
class GuestImage:
    """Everything one boot needs, all inside the cache."""

    vmlinux: Path
    initramfs: Path
    layers: tuple[Path, ...]  # overlay lower layers above the host root, highest first
    resolved: Resolved
    note: str | None = None   # set when a cached entry stands in for an unreachable archive

    @property
    def own_root(self) -> bool:
        """The layers hold a whole root filesystem (systemd as PID 1), not the host's root."""
        return bool(self.resolved.rootfs)


Log = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def run(cmd: Sequence[str | Path], *, cwd: Path | None = None, log_file: Path | None = None,
        env: dict[str, str] | None = None) -> str:
    """Run ``cmd``; on failure raise BuildError with the command and the tail of its output."""
    argv = [str(c) for c in cmd]
    proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", check=False)
    if log_file is not None:
        with log_file.open("a") as f:
            f.write(f"$ {' '.join(argv)}\n{proc.stdout}\n")
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise BuildError(f"`{' '.join(argv)}` failed with rc {proc.returncode}:\n{tail}")
    return proc.stdout


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive flock on ``path`` (created if needed), held for the body."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only fd releases the flock


def _rmtree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


@contextmanager
def _building(tmp: Path) -> Iterator[Path]:
    """A fresh ``tmp`` build dir that is removed again if the build fails."""
    _rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        _rmtree(tmp)
        raise


def _publish(tmp: Path, final: Path) -> None:
    """Move a finished ``tmp`` tree to ``final`` (rename is atomic on one filesystem)."""
    _rmtree(final)
    tmp.rename(final)


# --------------------------------------------------------------------------------- apt

def _apt_options(cache: Path, fl: Flavour | None = None) -> list[str]:
    """apt options for a private source list, list dir and cache: the system's apt is untouched.

    contrib (ZFS) is not in the system's sources, and trixie is not the host's release;
    vm-test-host.md "Packages used" shows the same -o Dir::... approach. One directory per
    flavour. The sandbox user is root because the download dirs are root's.
    """
    fl = fl or config.BOOKWORM  # read at call time: tests replace it
    d = cache / fl.apt_dir
    (d / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (d / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    sources = d / "sources.list"
    if not sources.exists() or sources.read_text() != fl.apt_sources:
        sources.write_text(fl.apt_sources)
        (d / "lists.stamp").unlink(missing_ok=True)
    return ["-q", "-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={d / 'lists'}", "-o", f"Dir::Cache={d / 'cache'}",
            "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
            "-o", "APT::Sandbox::User=root"]


def _deb_path(debs: Path, name: str, version: str) -> Path | None:
    # apt-get download writes <name>_<version with ':' as %3a>_<arch>.deb
    prefix = f"{name}_{version.replace(':', '%3a')}_"
    found = sorted(p for p in debs.glob("*.deb") if p.name.startswith(prefix))
    return found[0] if found else None


def _lists_age(cache: Path, fl: Flavour | None = None) -> float:
    fl = fl or config.BOOKWORM  # read at call time: tests replace it
    stamp = cache / fl.apt_dir / "lists.stamp"
    return time.time() - stamp.stat().st_mtime if stamp.exists() else float("inf")


def apt_update(cache: Path, log: Log = _quiet, fl: Flavour | None = None) -> None:
    """Refresh the private lists; ArchiveUnreachable when apt cannot fetch them."""
    fl = fl or config.BOOKWORM  # read at call time: tests replace it
    with locked(cache / "apt.lock"):
        opts = _apt_options(cache, fl)
        log(f"kernel host: apt-get update (private lists, {fl.name})")
        try:
            # apt-get update exits 0 when it cannot fetch a list (it keeps the old one);
            # --error-on=any (apt >= 2.1.16) makes that an error. One retry, not three.
            run(["apt-get", *opts, "-o", "Acquire::Retries=1", "--error-on=any", "update"])
        except BuildError as e:
            raise ArchiveUnreachable(str(e)) from e
        (cache / fl.apt_dir / "lists.stamp").touch()


def apt_lookup(cache: Path,
               fl: Flavour | None = None) -> Callable[[Sequence[str]], list[Stanza]]:
    """A resolve.Lookup over the private lists: ``apt-cache show`` of the names asked for."""
    opts = _apt_options(cache, fl)

    def lookup(names: Sequence[str]) -> list[Stanza]:
        # apt-cache exits 100 when one of the names is unknown but still prints the others;
        # an unknown name is the resolver's to report, so only stdout counts.
        proc = subprocess.run(["apt-cache", *opts, "show", *names], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace", check=False)
        if proc.returncode not in (0, 100):
            raise BuildError(f"apt-cache show {' '.join(names)} failed with rc "
                             f"{proc.returncode}: {proc.stderr.strip()}")
        return parse_stanzas(proc.stdout)
    return lookup


def resolve_now(cache: Path, log: Log = _quiet, *, refresh: bool = False,
                fl: Flavour | None = None) -> Resolved:
    """The kernel test host's packages as the archive serves them now (resolve.py).

    The lists are refreshed when older than config.LISTS_MAX_AGE_S or when ``refresh``.
    """
    fl = fl or config.BOOKWORM  # read at call time: tests replace it
    if refresh or _lists_age(cache, fl) > config.LISTS_MAX_AGE_S:
        apt_update(cache, log, fl)
    try:
        return resolve(apt_lookup(cache, fl), fl.wanted)
    except ResolveError as e:
        raise UnresolvedError(f"resolving the kernel test host's packages: {e}") from e


def fetch_debs(cache: Path, pins: Sequence[tuple[str, str]], log: Log = _quiet,
               fl: Flavour | None = None) -> list[Path]:
    """The .deb of each resolved (name, version), downloaded once with apt-get download."""
    fl = fl or config.BOOKWORM  # read at call time: tests replace it
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    with locked(cache / "apt.lock"):
        missing = [(n, v) for n, v in pins if _deb_path(debs, n, v) is None]
        if missing:
            opts = _apt_options(cache, fl)
            log(f"kernel host: apt-get download {' '.join(n for n, _ in missing)}")
            tmp = debs / "download.tmp"
            _rmtree(tmp)
            tmp.mkdir()
            try:
                run(["apt-get", *opts, "download", *(f"{n}={v}" for n, v in missing)], cwd=tmp)
                for got in tmp.glob("*.deb"):
                    got.rename(debs / got.name)
            except BuildError as e:
                raise DownloadError(str(e)) from e
            finally:
                _rmtree(tmp)
    out: list[Path] = []
    for n, v in pins:
        path = _deb_path(debs, n, v)
        if path is None:
            raise DownloadError(f"{n}={v}: not found after apt-get download")
        out.append(path)
    return out


def unpack(deb: Path, dest: Path) -> None:
    """``dpkg-deb -x``: files only, no maintainer scripts, nothing registered with dpkg."""
    dest.mkdir(parents=True, exist_ok=True)
    run(["dpkg-deb", "-x", deb, dest])


def merge_usr(root: Path) -> None:
    """Move top-level bin/sbin/lib of an unpacked tree into usr/ (see the module docstring)."""
    for top in ("bin", "sbin", "lib"):
        src = root / top
        if src.is_symlink() or not src.is_dir():
            continue
        dst = root / "usr" / top
        dst.mkdir(parents=True, exist_ok=True)
        for dirpath, dirnames, filenames in os.walk(src):
            rel = Path(dirpath).relative_to(src)
            (dst / rel).mkdir(parents=True, exist_ok=True)
            for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
                target = dst / rel / name
                _rmtree(target)
                os.rename(Path(dirpath) / name, target)
        shutil.rmtree(src)


# --------------------------------------------------------------------------------- kernel

def depmod(modules_dir: Path, abi: str) -> None:
    """depmod for a tree at ``modules_dir`` (= .../usr/lib/modules/<abi>).

    depmod -b wants <base>/lib/modules/<abi>; a symlink stands in for the /usr path.
    """
    base = modules_dir.parent / f".depmod-base-{os.getpid()}"
    _rmtree(base)
    (base / "lib" / "modules").mkdir(parents=True)
    try:
        (base / "lib" / "modules" / abi).symlink_to(modules_dir)
        run(["depmod", "-b", base, abi])
    finally:
        _rmtree(base)
    if not (modules_dir / "modules.dep").stat().st_size:
        raise BuildError(f"depmod wrote an empty modules.dep in {modules_dir}")


def _bzimage_payload(data: bytes) -> bytes:
    """The compressed kernel inside a bzImage, cut out with the boot header's own fields.

    Documentation/arch/x86/boot.rst: setup_sects at 0x1f1 (0 means 4), payload_offset at
    0x248 and payload_length at 0x24c, relative to the protected-mode code that follows the
    (setup_sects + 1) * 512 bytes of real-mode setup. The kernel's build appends the
    decompressed size (le32) to the compressed data (mkpiggy's input), which is not part of
    the stream.
    """
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        raise BuildError("not a bzImage (no HdrS boot header)")
    setup = ((data[0x1f1] or 4) + 1) * 512
    off = int.from_bytes(data[0x248:0x24c], "little")
    length = int.from_bytes(data[0x24c:0x250], "little")
    return data[setup + off:setup + off + length - 4]


def extract_vmlinux(vmlinuz: Path, out: Path) -> None:
    """Decompress the ELF vmlinux out of a bzImage, for QEMU's PVH boot.

    PVH (CONFIG_PVH=y) starts the uncompressed kernel directly: no BIOS, no real-mode setup and
    no decompressor under TCG, which halves the boot time (vm-test-host.md, "Boot times").
    Debian 12's payload is xz (CONFIG_KERNEL_XZ), Debian 13's zstd (CONFIG_KERNEL_ZSTD).
    """
    data = vmlinuz.read_bytes()
    payload = _bzimage_payload(data) if data[0x202:0x206] == b"HdrS" else b""
    if payload.startswith(ZSTD_MAGIC):
        # No zstd module in Python 3.11's standard library: the zstd tool (package zstd).
        proc = subprocess.run(["zstd", "-dcq"], input=payload, capture_output=True,
                              check=False)
        if proc.returncode != 0:
            raise BuildError(f"{vmlinuz}: zstd -d failed: {proc.stderr.decode()[-500:]}")
        elf = proc.stdout
    else:
        off = data.find(XZ_MAGIC)
        if off < 0:
            raise BuildError(f"{vmlinuz}: no xz or zstd stream found")
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[off:])
    if not elf.startswith(b"\x7fELF"):
        raise BuildError(f"{vmlinuz}: the compressed payload is not an ELF file")
    out.write_bytes(elf)


def kernel_home(cache: Path, r: Resolved) -> Path:
    """The directory of one kernel package and what is built for it (module, initramfs)."""
    return cache / f"kernel-{r.kernel_key}"


def ensure_kernel(cache: Path, r: Resolved, log: Log = _quiet,
                  fl: Flavour | None = None) -> Path:
    """kernel-<key>/kernel with vmlinux and root/ (the modules layer). Returns that directory."""
    fl = fl or config.BOOKWORM  # read at call time: tests replace it
    abi, home = r.kernel_abi, kernel_home(cache, r)
    final = home / "kernel"
    stamp = final / ".complete"
    if stamp.exists() and stamp.read_text() == r.kernel_version:
        return final
    (deb,) = fetch_debs(cache, [r.image_pin()], log, fl)
    with locked(home / "kernel.lock"):
        if stamp.exists() and stamp.read_text() == r.kernel_version:
            return final
        log(f"kernel host: unpacking {deb.name}")
        with _building(home / "kernel.tmp") as tmp:
            unpack(deb, tmp / "unpack")
            mods = tmp / "root" / "usr" / "lib" / "modules" / abi
            mods.parent.mkdir(parents=True)
            # Debian 12's package ships /lib/modules, Debian 13's /usr/lib/modules (merged-/usr
            # is complete in trixie's packages).
            shipped = [d / abi for d in (tmp / "unpack" / "usr" / "lib" / "modules",
                                         tmp / "unpack" / "lib" / "modules") if (d / abi).is_dir()]
            if not shipped:
                raise BuildError(f"{deb.name} has no lib/modules/{abi}")
            shipped[0].rename(mods)
            depmod(mods, abi)
            extract_vmlinux(tmp / "unpack" / "boot" / f"vmlinuz-{abi}", tmp / "vmlinux")
            shutil.copy2(tmp / "unpack" / "boot" / f"config-{abi}", tmp / "config")
            _rmtree(tmp / "unpack")
            (tmp / ".complete").write_text(r.kernel_version)
            _publish(tmp, final)
    return final


# --------------------------------------------------------------------------------- ZFS

def _fix_header_makefiles(root: Path) -> None:
    """Point the headers' absolute ``include /usr/src/...`` at the unpacked copy.

    linux-headers-<abi>-amd64/Makefile includes /usr/src/linux-headers-<abi>-common/Makefile by
    absolute path; the other links are relative (vm-test-host.md, "OpenZFS", fix 1).
    """
    for mk in (root / "usr" / "src").glob("linux-headers-*/Makefile"):
        text = mk.read_text()
        fixed = re.sub(r"^(include\s+)/usr/src/", rf"\g<1>{root}/usr/src/", text, flags=re.M)
        if fixed != text:
            mk.write_text(fixed)


def ensure_zfs(cache: Path, r: Resolved, kernel_dir: Path, log: Log = _quiet) -> Path:
    """kernel-<key>/zfs-<version>: the module built for that kernel, plus ZFS userland.

    The module is built out of tree from zfs-dkms's source with that kernel's headers; not
    with dkms, which would target the running (host) kernel. About 6 minutes on 2 vCPUs, once
    per (kernel package, ZFS version).
    """
    home, zv = kernel_home(cache, r), r.zfs_version
    final = home / f"zfs-{zv}"
    stamp = final / ".complete"
    if stamp.exists():
        return final
    build_debs = fetch_debs(cache, r.zfs_build_pins(), log)
    user_debs = fetch_debs(cache, r.zfs_userland, log)
    with locked(home / f"zfs-{zv}.lock"):
        if stamp.exists():
            return final
        tmp = home / f"zfs-{zv}.tmp"
        _rmtree(tmp)
        blog = tmp / "build.log"
        failed = home / f"zfs-{zv}-build-failed.log"
        try:
            _build_zfs(tmp, r, build_debs, user_debs, kernel_dir, final, log)
        except BaseException as e:
            # Keep only the log (for the error message); the half-built tree goes.
            if blog.exists():
                shutil.copy2(blog, failed)
            _rmtree(tmp)
            if isinstance(e, BuildError):
                raise BuildError(f"{e}\n(full ZFS build log: {failed})") from e
            raise
        failed.unlink(missing_ok=True)
        (tmp / ".complete").write_text(zv)
        _publish(tmp, final)
    return final


def _only_dir(pattern: str, under: Path, what: str) -> Path:
    found = [p for p in under.glob(pattern) if p.is_dir()]
    if len(found) != 1:
        raise BuildError(f"expected one {what} ({under}/{pattern}), found "
                         f"{[p.name for p in found] or 'none'}")
    return found[0]


def _build_zfs(tmp: Path, r: Resolved, build_debs: Sequence[Path], user_debs: Sequence[Path],
               kernel_dir: Path, final: Path, log: Log) -> None:
    """Build into ``tmp``: the module from source, then the layer (see ensure_zfs)."""
    abi, zv = r.kernel_abi, r.zfs_version
    bld = tmp / "build"
    for deb in build_debs:
        unpack(deb, bld)
    _fix_header_makefiles(bld)
    # zfs-dkms puts its source in /usr/src/zfs-<upstream version>: found, not named.
    src = _only_dir("zfs-*", bld / "usr" / "src", "OpenZFS source tree from zfs-dkms")
    common = _only_dir("linux-headers-*-common", bld / "usr" / "src", "common kernel headers")
    blog = tmp / "build.log"
    log(f"kernel host: building the ZFS {zv} module for {abi} (about 6 min, once; "
        f"log: {final / 'build.log'})")
    t0 = time.monotonic()
    run(["./configure", "--with-config=kernel", f"--with-linux={common}",
         f"--with-linux-obj={bld}/usr/src/linux-headers-{abi}"], cwd=src, log_file=blog)
    run(["make", f"-j{os.cpu_count() or 2}"], cwd=src, log_file=blog)
    _zfs_layer(tmp, r, sorted(src.glob("module/**/*.ko")), kernel_dir)
    root = tmp / "root"
    for deb in user_debs:
        unpack(deb, root)
    merge_usr(root)
    for junk in ("usr/share/doc", "usr/share/man", "usr/share/locale"):
        _rmtree(root / junk)
    _rmtree(bld)
    with blog.open("a") as logf:
        logf.write(f"# build took {time.monotonic() - t0:.0f} s\n")


# --------------------------------------------------------------------------------- root filesystem

# What a root filesystem is made with besides its packages; a change here is a new rootfs key.
ROOTFS_RECIPE = (
    "mmdebstrap --mode=root --variant=essential --format=directory",
    # Only what the packages need: a Proxmox VE node has the recommends, but the tests need
    # none of them and they double the size (and the cold build time).
    'APT::Install-Recommends "false"',
    "path-exclude=/usr/share/doc/*", "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*", "path-exclude=/usr/share/info/*",
)


def rootfs_home(cache: Path, r: Resolved) -> Path:
    """rootfs-<flavour>-<hash>: keyed by the resolved versions of its named packages and the
    kernel headers in it (the ZFS module is built inside it for that kernel)."""
    blob = json.dumps([ROOTFS_RECIPE, r.flavour, r.rootfs, r.headers]).encode()
    return cache / f"rootfs-{r.flavour}-{hashlib.sha256(blob).hexdigest()[:12]}"


def ensure_rootfs(cache: Path, r: Resolved, log: Log = _quiet,
                  fl: Flavour = config.TRIXIE) -> Path:
    """The guest's root filesystem, built from the archive with mmdebstrap (root/ inside).

    The private source lines are given to mmdebstrap directly, so neither the system's apt
    sources nor its dpkg database are touched. Every named package is installed at its
    resolved version (``name=version``), so the tree matches its key; ``manifest.txt`` lists
    every package apt chose with it.
    """
    final = rootfs_home(cache, r)
    if (final / ".complete").exists():
        return final
    with locked(cache / f"{final.name}.lock"):
        if (final / ".complete").exists():
            return final
        if shutil.which("mmdebstrap") is None:
            raise BuildError("mmdebstrap is not installed (Debian package mmdebstrap; "
                             "`make setup` installs it)")
        log(f"kernel host: building the Debian {fl.name} root filesystem with mmdebstrap "
            f"({len(r.rootfs)} packages and their dependencies, about 4 min, once)")
        t0 = time.monotonic()
        with _building(cache / f"{final.name}.tmp") as tmp:
            blog = tmp / "build.log"
            pins = ",".join(f"{n}={v}" for n, v in (*r.rootfs, *r.headers))
            sources = [ln for ln in fl.apt_sources.splitlines() if ln.strip()]
            try:
                run(["mmdebstrap", "--mode=root", "--variant=essential", "--format=directory",
                     f"--aptopt={ROOTFS_RECIPE[1]}",
                     *(f"--dpkgopt={o}" for o in ROOTFS_RECIPE[2:]),
                     f"--include={pins}", fl.name, tmp / "root", *sources], log_file=blog)
            except BuildError as e:
                failed = cache / f"{final.name}-build-failed.log"
                shutil.copy2(blog, failed)
                raise BuildError(f"{e}\n(full log: {failed})") from e
            (tmp / "manifest.txt").write_text(run(
                ["chroot", tmp / "root", "dpkg-query", "-W", "-f", "${Package} ${Version}\n"]))
            (tmp / ".complete").write_text(f"{time.monotonic() - t0:.0f} s\n")
            _publish(tmp, final)
        log(f"kernel host: root filesystem built in {time.monotonic() - t0:.0f} s")
    return final


def kernel_cc(headers: Path) -> str:
    """The compiler the kernel was built with, as Debian's headers name it in .kernelvariables
    (``CC = $(if ...ccache) $(CROSS_COMPILE)gcc-14`` with ``CROSS_COMPILE = x86_64-linux-gnu-``
    in trixie). configure needs a C compiler, and trixie's root has no plain ``gcc`` without
    the ``gcc`` package; the headers' own one is the right one anyway."""
    text = (headers / ".kernelvariables").read_text() if (
        headers / ".kernelvariables").exists() else ""
    cc = re.search(r"^CC\s*=.*?\)\s*(\S+)\s*$", text, flags=re.M)
    cross = re.search(r"^override CROSS_COMPILE\s*=\s*(\S+)", text, flags=re.M)
    if cc is None:
        return "gcc"
    return cc.group(1).replace("$(CROSS_COMPILE)", cross.group(1) if cross else "")


def ensure_zfs_in_rootfs(cache: Path, r: Resolved, kernel_dir: Path, rootfs: Path,
                         log: Log = _quiet, fl: Flavour = config.TRIXIE) -> Path:
    """kernel-<key>/zfs-<version>: the OpenZFS module built inside the guest's root filesystem.

    The trixie kernel was built with gcc-14 (its headers depend on linux-compiler-gcc-14-x86);
    the host has gcc-12, whose flags and plugins do not match the kernel's configuration. The
    build therefore runs in a chroot of the root filesystem, which holds those headers at their
    usual paths and their gcc. The root filesystem itself stays unchanged: zfs-dkms's source is
    bind-mounted over its /mnt and a tmpfs over its /tmp, in a private mount namespace.
    The ZFS userland is installed in the root filesystem; the layer holds only the modules.
    """
    home, zv = kernel_home(cache, r), r.zfs_version
    final = home / f"zfs-{zv}"
    stamp = final / ".complete"
    if stamp.exists():
        return final
    (src_deb,) = fetch_debs(cache, [("zfs-dkms", zv)], log, fl)
    with locked(home / f"zfs-{zv}.lock"):
        if stamp.exists():
            return final
        tmp = home / f"zfs-{zv}.tmp"
        _rmtree(tmp)
        tmp.mkdir(parents=True)
        failed = home / f"zfs-{zv}-build-failed.log"
        try:
            bld = tmp / "build"
            unpack(src_deb, bld)
            src = _only_dir("zfs-*", bld / "usr" / "src", "OpenZFS source tree from zfs-dkms")
            root = rootfs / "root"
            common = _only_dir("linux-headers-*-common", root / "usr" / "src",
                               "common kernel headers in the root filesystem")
            inner = f"/mnt/{src.relative_to(bld)}"
            jobs = os.cpu_count() or 2
            cc = kernel_cc(root / "usr" / "src" / f"linux-headers-{r.kernel_abi}")
            build = (f"cd {inner} && ./configure CC={cc} --with-config=kernel "
                     f"--with-linux=/usr/src/{common.name} "
                     f"--with-linux-obj=/usr/src/linux-headers-{r.kernel_abi} && make -j{jobs}")
            script = "\n".join([
                "set -e",
                f"mount --bind {bld} {root}/mnt",
                f"mount -t tmpfs tmpfs {root}/tmp",
                f"mount -t proc proc {root}/proc",
                f"mount --rbind /dev {root}/dev",
                f"exec chroot {root} /bin/sh -c '{build}'",
            ])
            log(f"kernel host: building the ZFS {zv} module for {r.kernel_abi} in the "
                f"{fl.name} root filesystem (about 5 min, once; log: {final / 'build.log'})")
            t0 = time.monotonic()
            # A private mount namespace: the mounts vanish with the process, even on a kill.
            run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                log_file=tmp / "build.log", env={**os.environ, "LC_ALL": "C"})
            _zfs_layer(tmp, r, sorted(src.glob("module/**/*.ko")), kernel_dir)
            _rmtree(bld)
            with (tmp / "build.log").open("a") as logf:
                logf.write(f"# build took {time.monotonic() - t0:.0f} s\n")
        except BaseException as e:
            if (tmp / "build.log").exists():
                shutil.copy2(tmp / "build.log", failed)
            _rmtree(tmp)
            if isinstance(e, BuildError):
                raise BuildError(f"{e}\n(full ZFS build log: {failed})") from e
            raise
        failed.unlink(missing_ok=True)
        (tmp / ".complete").write_text(zv)
        _publish(tmp, final)
    return final


def _zfs_layer(tmp: Path, r: Resolved, kos: Sequence[Path], kernel_dir: Path) -> None:
    """tmp/root: the stripped modules in updates/zfs and a modules.dep covering both layers."""
    abi = r.kernel_abi
    if not any(k.name == "zfs.ko" for k in kos):
        raise BuildError(f"ZFS build produced no zfs.ko (see {tmp / 'build.log'})")
    moddir = tmp / "root" / "usr" / "lib" / "modules" / abi
    updates = moddir / "updates" / "zfs"
    updates.mkdir(parents=True)
    for ko in kos:
        # --strip-debug: about 90 MB of modules become about 9 MB (vm-test-host.md).
        run(["strip", "--strip-debug", "-o", updates / ko.name, ko])
    # One modules.dep covering the kernel's modules and ZFS's: the ZFS layer sits above
    # the kernel layer, so its modules.* files are the ones the guest's modprobe reads.
    merged = tmp / "depmod" / "usr" / "lib" / "modules" / abi
    shutil.copytree(kernel_dir / "root" / "usr" / "lib" / "modules" / abi, merged,
                    copy_function=os.link)
    shutil.copytree(updates, merged / "updates" / "zfs", copy_function=os.link)
    depmod(merged, abi)
    for f in merged.glob("modules.*"):
        shutil.copy2(f, moddir / f.name)
    _rmtree(tmp / "depmod")


# --------------------------------------------------------------------------------- tools

def ensure_tools(cache: Path, r: Resolved, log: Log = _quiet) -> Path:
    """tools-<hash>: guest-only userland unpacked from .debs (apparmor_parser, aa-status)."""
    key = hashlib.sha256(repr(r.guest_tools).encode()).hexdigest()[:12]
    final = cache / f"tools-{key}"
    if (final / ".complete").exists():
        return final
    debs = fetch_debs(cache, r.guest_tools, log)
    with locked(cache / "tools.lock"):
        if (final / ".complete").exists():
            return final
        with _building(cache / f"tools-{key}.tmp") as tmp:
            for deb in debs:
                unpack(deb, tmp / "root")
            merge_usr(tmp / "root")
            for junk in ("usr/share/doc", "usr/share/man", "usr/share/locale"):
                _rmtree(tmp / "root" / junk)
            (tmp / ".complete").write_text(repr(r.guest_tools))
            _publish(tmp, final)
    return final


# --------------------------------------------------------------------------------- initramfs

class _Cpio:
    """A minimal writer for the "newc" cpio format the kernel unpacks as initramfs.

    Written here so that device nodes (/dev/console) go in without root or mknod.
    """

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.parts.append(header + encoded + b"\0" * (-(110 + len(encoded)) % 4))
        self.parts.append(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self.add(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.add(name, stat.S_IFREG | mode, data)

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return b"".join(self.parts)


def _module_load_order(kernel_dir: Path, abi: str, names: Sequence[str]) -> list[Path]:
    """The .ko files to insmod, dependencies first (modprobe --show-depends on the tree)."""
    base = kernel_dir / f".show-depends-{os.getpid()}"
    _rmtree(base)
    (base / "lib" / "modules").mkdir(parents=True)
    order: list[Path] = []
    try:
        (base / "lib" / "modules" / abi).symlink_to(kernel_dir / "root/usr/lib/modules" / abi)
        for name in names:
            out = run(["modprobe", "-d", base, "-S", abi, "--show-depends", name])
            for line in out.splitlines():
                # "insmod /path/x.ko [params]"; "builtin x" needs nothing.
                if line.startswith("insmod "):
                    rel = Path(line.split()[1]).relative_to(base / "lib" / "modules" / abi)
                    ko = kernel_dir / "root/usr/lib/modules" / abi / rel
                    if ko not in order:
                        order.append(ko)
    finally:
        _rmtree(base)
    return order


def ensure_initramfs(cache: Path, r: Resolved, kernel_dir: Path) -> Path:
    """Busybox, /init and the modules needed to mount the host root over 9p with an overlay."""
    init = (HERE / "guest_init.sh").read_bytes()
    kos = _module_load_order(kernel_dir, r.kernel_abi, config.INITRAMFS_MODULES)
    h = hashlib.sha256(init + BUSYBOX.read_bytes())
    for ko in kos:
        h.update(ko.name.encode())
    out = kernel_home(cache, r) / f"initramfs-{h.hexdigest()[:12]}.cpio.gz"
    if out.exists():
        return out
    cp = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "mnt", "mnt/host", "mnt/cache", "mnt/rw",
              "modules"):
        cp.dir(d)
    # The kernel opens /dev/console for init's stdio before anything is mounted.
    cp.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    cp.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    cp.file("init", init, 0o755)
    order = []
    for i, ko in enumerate(kos):
        data = ko.read_bytes()
        if ko.suffix == ".xz":
            # Debian 13's modules are xz-compressed (.ko.xz); busybox's insmod takes plain ELF.
            data = lzma.decompress(data)
        name = f"{i:02d}-{ko.name.removesuffix('.xz')}"
        cp.file(f"modules/{name}", data)
        order.append(name)
    cp.file("modules/order", ("\n".join(order) + "\n").encode())
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(gzip.compress(cp.finish(), compresslevel=6))
    tmp.rename(out)
    # Images of earlier guest_init.sh versions: a running QEMU keeps its open file.
    for old in out.parent.glob("initramfs-*.cpio.gz"):
        if old != out:
            old.unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------------- entries

def _build(cache: Path, r: Resolved, log: Log, fl: Flavour | None = None) -> GuestImage:
    fl = fl or config.BOOKWORM  # read at call time: tests replace it
    kernel_dir = ensure_kernel(cache, r, log, fl)
    if fl.has_rootfs:
        rootfs = ensure_rootfs(cache, r, log, fl)
        zfs = ensure_zfs_in_rootfs(cache, r, kernel_dir, rootfs, log, fl)
        initramfs = ensure_initramfs(cache, r, kernel_dir)
        # Highest first: the ZFS modules (and the modules.dep covering both), the kernel's
        # modules, then the whole root filesystem. The host root is not a layer here.
        return GuestImage(vmlinux=kernel_dir / "vmlinux", initramfs=initramfs,
                          layers=(zfs / "root", kernel_dir / "root", rootfs / "root"),
                          resolved=r)
    tools = ensure_tools(cache, r, log)
    zfs = ensure_zfs(cache, r, kernel_dir, log)
    initramfs = ensure_initramfs(cache, r, kernel_dir)
    return GuestImage(vmlinux=kernel_dir / "vmlinux", initramfs=initramfs,
                      layers=(zfs / "root", tools / "root", kernel_dir / "root"), resolved=r)


def _record(cache: Path, image: GuestImage) -> Path:
    """entries/<key>.json for a complete image; its mtime marks the last use."""
    d = cache / "entries"
    d.mkdir(parents=True, exist_ok=True)
    rel = [str(p.relative_to(cache)) for p in (image.vmlinux, image.initramfs, *image.layers)]
    rec = {"resolved": image.resolved.to_json(), "paths": rel,
           "debs": [f"{n}_{v.replace(':', '%3a')}_" for n, v in image.resolved.all_pins()]}
    path = d / f"{image.resolved.key}.json"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
    tmp.rename(path)  # also bumps the mtime: newest use first
    return path


def entry_flavour(rec: dict[str, object]) -> str:
    """The flavour an entry was built for (entries from before flavours are bookworm's)."""
    resolved = rec.get("resolved")
    return str(resolved.get("flavour", "bookworm")) if isinstance(resolved, dict) else "bookworm"


def _entries(cache: Path, flavour: str | None = None) -> list[tuple[Path, dict[str, object]]]:
    """Recorded entries (of one flavour, if given), newest use first; unreadable ones skipped."""
    out = []
    for p in (cache / "entries").glob("*.json"):
        try:
            rec = json.loads(p.read_text())
            if flavour is None or entry_flavour(rec) == flavour:
                out.append((p.stat().st_mtime, p, rec))
        except (OSError, ValueError):
            continue
    out.sort(key=lambda t: t[0], reverse=True)
    return [(p, rec) for _, p, rec in out]


def _complete(cache: Path, rec: dict[str, object]) -> GuestImage | None:
    paths = rec.get("paths")
    if not isinstance(paths, list) or len(paths) < 3:
        return None
    full = [cache / str(p) for p in paths]
    if not all(p.exists() for p in full):
        return None
    resolved = rec.get("resolved")
    if not isinstance(resolved, dict):
        return None
    return GuestImage(vmlinux=full[0], initramfs=full[1], layers=tuple(full[2:]),
                      resolved=Resolved.from_json(resolved))


def _fallback(cache: Path, why: str, fl: Flavour | None = None) -> GuestImage:
    """The newest complete entry of the flavour, for when the archive cannot give a fresh one."""
    fl = fl or config.BOOKWORM  # read at call time: tests replace it
    for path, rec in _entries(cache, fl.name):
        image = _complete(cache, rec)
        if image is not None:
            used = time.strftime("%Y-%m-%d %H:%M", time.gmtime(path.stat().st_mtime))
            return GuestImage(image.vmlinux, image.initramfs, image.layers, image.resolved,
                              note=f"{why}; using the newest cached kernel test host "
                                   f"(last used {used} UTC)")
    w = fl.wanted
    parts = ", ".join((*w.guest_tools, *w.rootfs[:8]))
    raise BuildError(
        f"{why}, and the cache {cache} holds no complete kernel test host ({fl.name}) to fall "
        f"back on. Missing: a kernel from {w.kernel_meta}, the OpenZFS module built from "
        f"{w.zfs_source} for it, {w.zfs_utils} and the guest's packages ({parts}, ...); run "
        f"`python -m tests.kernelhost prepare {fl.marker}` once with the Debian archive "
        f"reachable")


def prune(cache: Path, keep: int = config.KEEP_ENTRIES, log: Log = _quiet) -> list[Path]:
    """Remove entries beyond the newest ``keep`` of each flavour and what only they used.

    Per flavour: a run of one flavour must not evict the other's (rebuilding a trixie root
    filesystem and its ZFS module costs minutes). Returns what went.

    Kernel, module and tool directories of no entry are removed only when older than a day:
    another test run may be building them right now.
    """
    removed: list[Path] = []
    day_ago = time.time() - 86400
    with locked(cache / "prune.lock"):
        kept: list[tuple[Path, dict[str, object]]] = []
        dropped: list[tuple[Path, dict[str, object]]] = []
        seen: dict[str, int] = {}
        for entry in _entries(cache):
            fl = entry_flavour(entry[1])
            seen[fl] = seen.get(fl, 0) + 1
            (kept if seen[fl] <= keep else dropped).append(entry)
        used: set[Path] = set()
        debs: set[str] = set()
        for _, rec in kept:
            for p in rec.get("paths", []) or []:  # type: ignore[union-attr]
                rel = Path(str(p))
                used.update(cache / Path(*rel.parts[:i]) for i in range(1, len(rel.parts) + 1))
            debs.update(str(d) for d in rec.get("debs", []) or [])  # type: ignore[union-attr]
        dropped_dirs: set[Path] = set()
        for path, rec in dropped:
            for p in rec.get("paths", []) or []:  # type: ignore[union-attr]
                parts = Path(str(p)).parts
                dropped_dirs.update(cache / Path(*parts[:i]) for i in (1, 2) if len(parts) > i)
            path.unlink(missing_ok=True)
            removed.append(path)

        def stale(p: Path) -> bool:
            return p in dropped_dirs or p.stat().st_mtime < day_ago

        # Top level: kernel-*/ and tools-*/, and the <abi>/ directories of the pinned layout
        # that came before (issue 11).
        for p in sorted(cache.iterdir()):
            legacy = p.is_dir() and (p / "kernel").is_dir() and p.name.endswith("-amd64")
            if (p.name.startswith(("kernel-", "tools-", "rootfs-")) or legacy) and p.is_dir() \
                    and not p.name.endswith(".tmp") and p not in used and (legacy or stale(p)):
                _rmtree(p)
                removed.append(p)
        # Inside a kept kernel: module builds of ZFS versions no kept entry uses.
        for home in sorted(cache.glob("kernel-*")):
            if home not in used:
                continue
            for z in sorted(home.glob("zfs-*")):
                if z.is_dir() and not z.name.endswith(".tmp") and z not in used and stale(z):
                    _rmtree(z)
                    removed.append(z)
        for deb in sorted((cache / "debs").glob("*.deb")):
            if not any(deb.name.startswith(d) for d in debs) and (
                    dropped or deb.stat().st_mtime < day_ago):
                deb.unlink(missing_ok=True)
                removed.append(deb)
    for p in removed:
        log(f"kernel host: removed old cache entry part {p}")
    return removed


def prepare(log: Log = _quiet, fl: Flavour | None = None) -> GuestImage:
    """Resolve, fetch and build everything (cheap when cached); what a boot needs.

    Falls back to the newest complete cache entry when the archive cannot be reached.
    """
    fl = fl or config.BOOKWORM  # read at call time: tests replace it
    cache = config.cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    refreshed = _lists_age(cache, fl) > config.LISTS_MAX_AGE_S
    try:
        r = resolve_now(cache, log, fl=fl)
        try:
            image = _build(cache, r, log, fl)
        except DownloadError as first:
            if refreshed:
                raise
            # Lists up to an hour old can name a version the mirror has just dropped.
            log(f"kernel host: download failed on lists {_lists_age(cache, fl):.0f} s old; "
                f"refreshing them ({str(first).splitlines()[-1]})")
            r = resolve_now(cache, log, refresh=True, fl=fl)
            image = _build(cache, r, log, fl)
    except (ArchiveUnreachable, DownloadError) as e:
        return _fallback(cache, f"the Debian archive cannot be reached "
                                f"({str(e).strip().splitlines()[-1]})", fl)
    except UnresolvedError as e:
        # E.g. a new kernel whose headers have not reached the mirror yet.
        return _fallback(cache, str(e), fl)
    _record(cache, image)
    prune(cache, log=log)
    return image
