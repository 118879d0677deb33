"""Fetch, unpack and build what the guest needs; cached outside the checkout.

Layout under :func:`config.cache_root` (each step idempotent, built in a ``*.tmp`` sibling and
renamed into place under an ``flock``, so concurrent test runs never see a half-built tree)::

    apt/                          private apt config + lists (contrib for ZFS)
    debs/                         every pinned .deb, as `apt-get download` wrote it
    <abi>/kernel/vmlinux          ELF kernel, booted through its PVH entry (no decompressor)
    <abi>/kernel/root/usr/lib/modules/<abi>/...       overlay layer: modules + modules.dep
    <abi>/zfs-<zfs version>/root/...                  overlay layer: stripped zfs .ko files,
                                                      modules.dep covering both, ZFS userland
    <abi>/zfs-<zfs version>/build.log                 configure + make output of the build
    tools-<hash>/root/...                             overlay layer: apparmor_parser, aa-status
    <abi>/initramfs-<hash>.cpio.gz                    busybox /init + 9p/overlay modules

Layers use /usr paths only: the host is merged-/usr, and a real ``lib`` or ``sbin`` directory
in an upper layer would hide the host's ``/lib -> usr/lib`` symlink in the guest.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
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

HERE = Path(__file__).resolve().parent
BUSYBOX = Path("/bin/busybox")
# Start of an xz stream: vmlinuz is a bzImage whose payload is xz-compressed (vm-test-host.md,
# "Kernel": find FD 37 7A 58 5A 00 and decompress one stream).
XZ_MAGIC = b"\xfd7zXZ\x00"


class BuildError(RuntimeError):
    """A cache step failed. The message says which step and why (with the command's output)."""


@dataclass(frozen=True)
class GuestImage:
    """Everything one boot needs, all inside the cache."""

    vmlinux: Path
    initramfs: Path
    layers: tuple[Path, ...]  # overlay lower layers above the host root, highest first


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

def _apt_options(cache: Path) -> list[str]:
    """apt options for a private source list, list dir and cache: the system's apt is untouched.

    contrib (ZFS) is not in the system's sources; vm-test-host.md "Packages used" shows the
    same -o Dir::... approach. The sandbox user is root because the download dirs are root's.
    """
    d = cache / "apt"
    (d / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (d / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    sources = d / "sources.list"
    if not sources.exists() or sources.read_text() != config.APT_SOURCES:
        sources.write_text(config.APT_SOURCES)
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


def fetch_debs(cache: Path, pins: Sequence[tuple[str, str]], log: Log = _quiet) -> list[Path]:
    """The .deb of each pinned (name, version), downloaded once with apt-get download."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    with locked(cache / "apt.lock"):
        missing = [(n, v) for n, v in pins if _deb_path(debs, n, v) is None]
        if missing:
            opts = _apt_options(cache)
            stamp = cache / "apt" / "lists.stamp"
            # Refresh the private lists at most hourly: a pinned version may have left the
            # mirror, and a fresh list makes the error say so plainly.
            if not stamp.exists() or time.time() - stamp.stat().st_mtime > 3600:
                log("kernel host: apt-get update (private lists)")
                run(["apt-get", *opts, "update"])
                stamp.touch()
            log(f"kernel host: apt-get download {' '.join(n for n, _ in missing)}")
            tmp = debs / "download.tmp"
            _rmtree(tmp)
            tmp.mkdir()
            try:
                run(["apt-get", *opts, "download", *(f"{n}={v}" for n, v in missing)], cwd=tmp)
                for got in tmp.glob("*.deb"):
                    got.rename(debs / got.name)
            finally:
                _rmtree(tmp)
    out: list[Path] = []
    for n, v in pins:
        path = _deb_path(debs, n, v)
        if path is None:
            raise BuildError(f"{n}={v}: not found after apt-get download")
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


def extract_vmlinux(vmlinuz: Path, out: Path) -> None:
    """Decompress the ELF vmlinux out of a bzImage, for QEMU's PVH boot.

    PVH (CONFIG_PVH=y) starts the uncompressed kernel directly: no BIOS, no real-mode setup and
    no decompressor under TCG, which halves the boot time (vm-test-host.md, "Boot times").
    """
    data = vmlinuz.read_bytes()
    off = data.find(XZ_MAGIC)
    if off < 0:
        raise BuildError(f"{vmlinuz}: no xz stream found")
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    elf = dec.decompress(data[off:])
    if not elf.startswith(b"\x7fELF"):
        raise BuildError(f"{vmlinuz}: xz payload is not an ELF file")
    out.write_bytes(elf)


def ensure_kernel(cache: Path, log: Log = _quiet) -> Path:
    """<abi>/kernel with vmlinux and root/ (the modules layer). Returns that directory."""
    abi = config.KERNEL_ABI
    final = cache / abi / "kernel"
    stamp = final / ".complete"
    if stamp.exists() and stamp.read_text() == config.KERNEL_VERSION:
        return final
    (deb,) = fetch_debs(cache, [(f"linux-image-{abi}", config.KERNEL_VERSION)], log)
    with locked(cache / abi / "kernel.lock"):
        if stamp.exists() and stamp.read_text() == config.KERNEL_VERSION:
            return final
        log(f"kernel host: unpacking {deb.name}")
        with _building(cache / abi / "kernel.tmp") as tmp:
            unpack(deb, tmp / "unpack")
            mods = tmp / "root" / "usr" / "lib" / "modules" / abi
            mods.parent.mkdir(parents=True)
            (tmp / "unpack" / "lib" / "modules" / abi).rename(mods)
            depmod(mods, abi)
            extract_vmlinux(tmp / "unpack" / "boot" / f"vmlinuz-{abi}", tmp / "vmlinux")
            shutil.copy2(tmp / "unpack" / "boot" / f"config-{abi}", tmp / "config")
            _rmtree(tmp / "unpack")
            (tmp / ".complete").write_text(config.KERNEL_VERSION)
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


def ensure_zfs(cache: Path, kernel_dir: Path, log: Log = _quiet) -> Path:
    """<abi>/zfs-<version>: the module built for the pinned kernel, plus ZFS userland.

    The module is built out of tree from zfs-dkms's source with the pinned kernel headers; not
    with dkms, which would target the running (host) kernel. About 6 minutes on 2 vCPUs, once
    per (kernel ABI, ZFS version).
    """
    abi, zv = config.KERNEL_ABI, config.ZFS_VERSION
    final = cache / abi / f"zfs-{zv}"
    stamp = final / ".complete"
    if stamp.exists():
        return final
    kv = config.KERNEL_VERSION
    build_pins = [("zfs-dkms", zv), (f"linux-headers-{abi}", kv),
                  (config.KERNEL_HEADERS_COMMON, kv), (config.KERNEL_KBUILD, kv)]
    build_debs = fetch_debs(cache, build_pins, log)
    user_debs = fetch_debs(cache, [(n, zv) for n in config.ZFS_USERLAND], log)
    with locked(cache / abi / f"zfs-{zv}.lock"):
        if stamp.exists():
            return final
        tmp = cache / abi / f"zfs-{zv}.tmp"
        _rmtree(tmp)
        blog = tmp / "build.log"
        try:
            _build_zfs(tmp, build_debs, user_debs, kernel_dir, final, log)
        except BaseException as e:
            # Keep only the log (for the error message); the half-built tree goes.
            failed = cache / abi / f"zfs-{zv}-build-failed.log"
            if blog.exists():
                shutil.copy2(blog, failed)
            _rmtree(tmp)
            if isinstance(e, BuildError):
                raise BuildError(f"{e}\n(full ZFS build log: {failed})") from e
            raise
        (cache / abi / f"zfs-{zv}-build-failed.log").unlink(missing_ok=True)
        (tmp / ".complete").write_text(zv)
        _publish(tmp, final)
    return final


def _build_zfs(tmp: Path, build_debs: Sequence[Path], user_debs: Sequence[Path],
               kernel_dir: Path, final: Path, log: Log) -> None:
    """Build into ``tmp``: the module from source, then the layer (see ensure_zfs)."""
    abi, zv = config.KERNEL_ABI, config.ZFS_VERSION
    bld = tmp / "build"
    for deb in build_debs:
        unpack(deb, bld)
    _fix_header_makefiles(bld)
    src = bld / config.ZFS_SOURCE_DIR
    blog = tmp / "build.log"
    log(f"kernel host: building the ZFS {zv} module for {abi} (about 6 min, once; "
        f"log: {final / 'build.log'})")
    t0 = time.monotonic()
    run(["./configure", "--with-config=kernel",
         f"--with-linux={bld}/usr/src/{config.KERNEL_HEADERS_COMMON}",
         f"--with-linux-obj={bld}/usr/src/linux-headers-{abi}"], cwd=src, log_file=blog)
    run(["make", f"-j{os.cpu_count() or 2}"], cwd=src, log_file=blog)
    kos = sorted(src.glob("module/**/*.ko"))
    if not any(k.name == "zfs.ko" for k in kos):
        raise BuildError(f"ZFS build produced no zfs.ko (see {blog})")
    root = tmp / "root"
    moddir = root / "usr" / "lib" / "modules" / abi
    updates = moddir / "updates" / "zfs"
    updates.mkdir(parents=True)
    for ko in kos:
        # --strip-debug: about 90 MB of modules become about 9 MB (vm-test-host.md).
        run(["strip", "--strip-debug", "-o", updates / ko.name, ko])
    for deb in user_debs:
        unpack(deb, root)
    merge_usr(root)
    for junk in ("usr/share/doc", "usr/share/man", "usr/share/locale"):
        _rmtree(root / junk)
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
    _rmtree(bld)
    with blog.open("a") as logf:
        logf.write(f"# build took {time.monotonic() - t0:.0f} s\n")


# --------------------------------------------------------------------------------- tools

def ensure_tools(cache: Path, log: Log = _quiet) -> Path:
    """tools-<hash>: guest-only userland unpacked from .debs (apparmor_parser, aa-status)."""
    key = hashlib.sha256(repr(config.GUEST_TOOLS).encode()).hexdigest()[:12]
    final = cache / f"tools-{key}"
    if (final / ".complete").exists():
        return final
    debs = fetch_debs(cache, config.GUEST_TOOLS, log)
    with locked(cache / "tools.lock"):
        if (final / ".complete").exists():
            return final
        with _building(cache / f"tools-{key}.tmp") as tmp:
            for deb in debs:
                unpack(deb, tmp / "root")
            merge_usr(tmp / "root")
            for junk in ("usr/share/doc", "usr/share/man", "usr/share/locale"):
                _rmtree(tmp / "root" / junk)
            (tmp / ".complete").write_text(repr(config.GUEST_TOOLS))
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


def _module_load_order(kernel_dir: Path, names: Sequence[str]) -> list[Path]:
    """The .ko files to insmod, dependencies first (modprobe --show-depends on the tree)."""
    abi = config.KERNEL_ABI
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


def ensure_initramfs(cache: Path, kernel_dir: Path) -> Path:
    """Busybox, /init and the modules needed to mount the host root over 9p with an overlay."""
    init = (HERE / "guest_init.sh").read_bytes()
    kos = _module_load_order(kernel_dir, config.INITRAMFS_MODULES)
    h = hashlib.sha256(init + BUSYBOX.read_bytes())
    for ko in kos:
        h.update(ko.name.encode())
    out = cache / config.KERNEL_ABI / f"initramfs-{h.hexdigest()[:12]}.cpio.gz"
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
        name = f"{i:02d}-{ko.name}"
        cp.file(f"modules/{name}", ko.read_bytes())
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


def prepare(log: Log = _quiet) -> GuestImage:
    """Fetch and build everything (cheap when cached) and return what a boot needs."""
    cache = config.cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    kernel_dir = ensure_kernel(cache, log)
    tools = ensure_tools(cache, log)
    zfs = ensure_zfs(cache, kernel_dir, log)
    initramfs = ensure_initramfs(cache, kernel_dir)
    return GuestImage(vmlinux=kernel_dir / "vmlinux", initramfs=initramfs,
                      layers=(zfs / "root", tools / "root", kernel_dir / "root"))
