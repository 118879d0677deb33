"""Host-side tests of the kernel test host machinery itself (no VM is booted here)."""

from __future__ import annotations

import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernelhost import cache

REPO = Path(__file__).resolve().parents[2]


def test_cpio_newc_is_readable_by_cpio(tmp_path: Path) -> None:
    cp = cache._Cpio()
    cp.dir("bin")
    cp.file("bin/hello", b"hi\n", 0o755)
    cp.add("dev/console", 0o020600, rdev=(5, 1))
    archive = tmp_path / "a.cpio"
    archive.write_bytes(cp.finish())
    listing = subprocess.run(["cpio", "-itv", "-F", str(archive)], capture_output=True,
                             text=True, check=True).stdout
    assert "bin/hello" in listing
    console = next(line for line in listing.splitlines() if line.endswith("dev/console"))
    assert console.startswith("crw-------") and "5," in console


def test_merge_usr_moves_top_level_dirs(tmp_path: Path) -> None:
    (tmp_path / "sbin").mkdir()
    (tmp_path / "sbin" / "zfs").write_text("x")
    (tmp_path / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    (tmp_path / "lib" / "x86_64-linux-gnu" / "libzfs.so.4").write_text("y")
    (tmp_path / "lib" / "x86_64-linux-gnu" / "libzfs.so").symlink_to("libzfs.so.4")
    cache.merge_usr(tmp_path)
    assert not (tmp_path / "sbin").exists() and not (tmp_path / "lib").exists()
    assert (tmp_path / "usr/sbin/zfs").read_text() == "x"
    assert os.readlink(tmp_path / "usr/lib/x86_64-linux-gnu/libzfs.so") == "libzfs.so.4"


def test_extract_vmlinux_finds_the_xz_payload(tmp_path: Path) -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 64
    bz = tmp_path / "vmlinuz"
    bz.write_bytes(b"MZ setup code" + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"trailer")
    cache.extract_vmlinux(bz, tmp_path / "vmlinux")
    assert (tmp_path / "vmlinux").read_bytes() == elf


def _run_kernel_item(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_k.py"
    test.write_text("import pytest\n\n@pytest.mark.kernel\ndef test_k():\n"
                    "    raise SystemExit('a kernel test body ran on the host')\n")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.kernelhost.plugin", "-c",
         str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path), "-q", "-p",
         "no:cacheprovider", str(test)],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_no_qemu_means_skipped_with_reason(tmp_path: Path) -> None:
    r = _run_kernel_item(tmp_path, {"LXCRI_QEMU": "/nonexistent/qemu"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 skipped" in r.stdout
    assert "kernel test host unavailable: /nonexistent/qemu is not installed" in r.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for the cache path test")
def test_broken_cache_means_failure_with_reason(tmp_path: Path) -> None:
    r = _run_kernel_item(tmp_path, {"LXCRI_KERNEL_CACHE": "/proc/no-such-dir"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 failed" in r.stdout
    assert "preparing the kernel test host failed" in r.stdout
    assert "a kernel test body ran on the host" not in r.stdout


def test_plan_shards_balances_and_keeps_order() -> None:
    from tests.kernelhost import vm

    ids = [f"tests/kernel/test_a.py::t{i}" for i in range(4)] + \
        [f"tests/kernel/test_b.py::t{i}" for i in range(2)] + ["tests/kernel/test_c.py::t0"]
    durations = {i: 10.0 for i in ids} | {"tests/kernel/test_c.py::t0": 40.0}
    groups = vm.plan_shards(ids, 2, durations)
    assert sorted(sum(groups, [])) == sorted(ids)
    loads = sorted(sum(durations[i] for i in g) for g in groups)
    assert loads == [40.0, 60.0]
    for g in groups:  # original order inside each boot
        assert g == sorted(g, key=ids.index)
    # Too little work for a second boot: one group.
    assert vm.plan_shards(ids[:3], 2, {}) == [ids[:3]]
    assert vm.plan_shards([], 2, {}) == []


def test_extract_vmlinux_cuts_a_zstd_payload_out_of_the_boot_header(tmp_path: Path) -> None:
    # Debian 13's bzImage: zstd payload found through setup_sects/payload_offset/length
    # (boot.rst), with the le32 decompressed size the kernel build appends after it.
    elf = b"\x7fELF" + bytes(range(256)) * 64
    zst = subprocess.run(["zstd", "-q", "-c"], input=elf, capture_output=True,
                         check=True).stdout + len(elf).to_bytes(4, "little")
    setup = bytearray(5 * 512)  # setup_sects = 4
    setup[0x1f1] = 4
    setup[0x202:0x206] = b"HdrS"
    setup[0x248:0x24c] = (100).to_bytes(4, "little")
    setup[0x24c:0x250] = len(zst).to_bytes(4, "little")
    bz = tmp_path / "vmlinuz"
    bz.write_bytes(bytes(setup) + b"\0" * 100 + zst + b"trailer")
    cache.extract_vmlinux(bz, tmp_path / "vmlinux")
    assert (tmp_path / "vmlinux").read_bytes() == elf


def test_kernel_cc_is_read_from_the_headers_kernelvariables(tmp_path: Path) -> None:
    (tmp_path / ".kernelvariables").write_text(
        "override ARCH = x86\nCC = $(if $(DEBIAN_KERNEL_USE_CCACHE),$(CCACHE)) "
        "$(CROSS_COMPILE)gcc-14\noverride CROSS_COMPILE = x86_64-linux-gnu-\n")
    assert cache.kernel_cc(tmp_path) == "x86_64-linux-gnu-gcc-14"
    assert cache.kernel_cc(tmp_path / "missing") == "gcc"


@pytest.mark.parametrize(("expr", "needs"), [
    ("pve9", True), ("pve9 and not kernel", True), ("kernel or pve9", True),
    ("not kernel", False), ("kernel", False), ("", False), ("integration", False)])
def test_a_pve9_batch_runs_only_when_the_marker_expression_needs_it(expr: str,
                                                                    needs: bool) -> None:
    from tests.kernelhost.plugin import expression_needs

    assert expression_needs(expr, "pve9") is needs


def test_a_guest_with_its_own_root_boots_systemd_single_threaded(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    from tests.kernelhost import config, vm
    from tests.kernelhost.resolve import Resolved

    monkeypatch.setenv("LXCRI_KERNEL_CACHE", str(tmp_path))
    # Synthetic: only the flavour matters to the QEMU command line, not these versions.
    r = Resolved(kernel_abi="test-amd64", kernel_version="test", headers=(),
                 zfs_version="test", zfs_userland=(), guest_tools=(), flavour="trixie",
                 rootfs=(("lxc", "test"),))
    layers = (tmp_path / "zfs" / "root", tmp_path / "kernel" / "root", tmp_path / "rootfs" / "root")
    image = cache.GuestImage(tmp_path / "vmlinux", tmp_path / "i.cpio.gz", layers, r)
    cmd = vm.qemu_command(image, tmp_path / "results", tmp_path / "console.log")
    append = cmd[cmd.index("-append") + 1].split()
    assert "lxcri.init=/usr/lib/systemd/systemd" in append
    assert "systemd.unit=lxcri-test.target" in append
    assert "lxcri.layers=zfs/root:kernel/root:rootfs/root" in append
    assert any(a.startswith("lxcri.stage2=") and a.endswith("guest_systemd.sh") for a in append)
    assert cmd[cmd.index("-accel") + 1] == f"tcg,thread={config.TRIXIE.tcg_thread}"
    # The kernel flavour's command line is unchanged: the host root, bash, default TCG.
    bookworm = cache.GuestImage(image.vmlinux, image.initramfs, layers,
                                Resolved(**{**r.__dict__, "rootfs": (), "flavour": "bookworm"}))
    cmd = vm.qemu_command(bookworm, tmp_path / "results", tmp_path / "console.log")
    assert cmd[cmd.index("-accel") + 1] == "tcg"
    assert not any(a.startswith("lxcri.init=") for a in cmd[cmd.index("-append") + 1].split())


def test_host_paths_bind_the_checkout_and_the_interpreter_once(tmp_path: Path) -> None:
    from tests.kernelhost import vm

    paths = vm.host_paths(REPO)
    assert paths[0] == str(REPO.resolve())
    assert str(Path(sys.base_prefix).resolve()) in paths or any(
        Path(sys.base_prefix).resolve().is_relative_to(p) for p in paths)
    assert len(paths) == len(set(paths))


def test_the_root_filesystem_is_rebuilt_when_its_package_set_changes(tmp_path: Path) -> None:
    # A package added to config.TRIXIE_ROOTFS (as openssl and ca-certificates were, for the
    # PVE stand-in) must give a new rootfs directory, so the next batch builds it once by
    # itself; the same set at the same versions must reuse the cached one.
    from tests.kernelhost.resolve import Resolved

    r = Resolved(kernel_abi="test-amd64", kernel_version="test", headers=(),
                 zfs_version="test", zfs_userland=(), guest_tools=(), flavour="trixie",
                 rootfs=(("lxc", "test"),))
    more = Resolved(**{**r.__dict__, "rootfs": (("lxc", "test"), ("openssl", "test"))})
    same = Resolved(**{**r.__dict__})
    assert cache.rootfs_home(tmp_path, r) == cache.rootfs_home(tmp_path, same)
    assert cache.rootfs_home(tmp_path, r) != cache.rootfs_home(tmp_path, more)
    # The entry key (entries/<key>.json) moves with it, so the entry names the new root.
    assert r.key != more.key


def test_host_paths_bind_the_pve_api_schema_when_found(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # The PVE stand-in reads Proxmox's API schema from outside the checkout; the pve9 guest
    # binds that folder at its own path so that the stand-in finds it there too.
    from tests.kernelhost import vm
    from tests.pvestandin.schema import SCHEMA_FILES

    (tmp_path / SCHEMA_FILES["9.2"]).write_text("{}")
    monkeypatch.setenv("PVE_API_SCHEMA_DIR", str(tmp_path))
    assert str(tmp_path.resolve()) in vm.host_paths(REPO)
