"""Root filesystem provisioning: ZFS clone of a cached image against a full copy.

For images of about 10 MB and 100 MB (random data, so compression cannot shrink them, plus the
busybox tree), on a zfs-fuse pool on a sparse file:

- clone: what the storage provisioner does for every container (``zfs clone`` of
  ``<pool>/images/<key>@base`` as ``<pool>/containers/<id>`` with quota and reservation, then
  reading its mountpoint); the image is populated once, beforehand;
- copy: ``zfs create`` plus ``cp -a`` of the image into it (what provisioning without the image
  cache would cost).

The clone's time must not grow with the image size. Prints the figures; ``--record`` appends
them to docs/benchmarks.md.

    .venv/bin/python -m bench.zfs_provision [-n 9] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench.common import median, percentile, record
from storage.layers import ImageSource
from storage.runner import ThreadRunner
from storage.service import ZfsStorage
from storage.settings import StorageSettings
from storage.zfs_cli import ZfsCli
from tests.harness.rootfs import populate_busybox_rootfs
from tests.harness.zfs import ZfsFuse, test_pool, zfs_skip_reason

SIZES_MB = (10, 100)


def make_image(root: Path, mb: int) -> None:
    populate_busybox_rootfs(root)
    data = root / "data"
    data.mkdir()
    # 1 MiB files of random data up to the size (busybox itself is about 2 MB).
    for i in range(max(0, mb - 2)):
        (data / f"blob{i:03d}").write_bytes(os.urandom(1 << 20))


async def measure(storage: ZfsStorage, pool: str, images: dict[int, Path], n: int
                  ) -> dict[int, tuple[list[float], list[float]]]:
    """{size: (clone times, copy times)}. Sizes alternate round by round, and clones are timed
    before any copy: destroying a full copy leaves zfs-fuse freeing blocks in the background,
    which would slow whatever is timed next, and a fixed order would show up as a size effect.
    """
    settings = StorageSettings(pool=pool, quota=1 << 30, reservation=16 << 20)
    bases = {mb: await storage.layers.ensure(ImageSource((str(img),)))
             for mb, img in images.items()}
    out: dict[int, tuple[list[float], list[float]]] = {mb: ([], []) for mb in images}
    for i in range(n):
        for mb in images:
            t = time.perf_counter()
            await storage.create_dataset(f"clone{mb}-{i}", bases[mb], settings, "bench")
            out[mb][0].append(time.perf_counter() - t)
    for i in range(n):
        for mb in images:
            await storage.destroy_dataset(f"clone{mb}-{i}")
    for i in range(n):
        for mb, image in images.items():
            name = f"{pool}/copies/c{mb}-{i}"
            t = time.perf_counter()
            await storage.driver.create(name, settings.zfs_props(), parents=True)
            (info,) = await storage.driver.info([name])
            r = await storage.runner.run(["cp", "-a", f"{image}/.", f"{info.mountpoint}/"],
                                         timeout=600)
            assert r.returncode == 0, r.stderr
            out[mb][1].append(time.perf_counter() - t)
            await storage.driver.destroy(name)
    await storage.images.prune()
    return out


def fmt(values: list[float]) -> str:
    return f"median {median(values) * 1000:.1f} ms, p90 {percentile(values, 90) * 1000:.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=9, help="samples per size")
    ap.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = ap.parse_args()
    reason = zfs_skip_reason()
    if reason:
        raise SystemExit(f"benchmark cannot run here: {reason}")
    daemon = ZfsFuse()
    daemon.ensure()
    rows = []
    try:
        with test_pool(size=2 << 30, prefix="lxb") as pool, \
                tempfile.TemporaryDirectory(prefix="lxcri-bench-img-") as tmp:
            runner = ThreadRunner()
            storage = ZfsStorage(ZfsCli(runner), runner, pool.name)
            images = {}
            for mb in SIZES_MB:
                images[mb] = Path(tmp) / f"img{mb}"
                make_image(images[mb], mb)
            for mb, (clone_t, copy_t) in asyncio.run(measure(storage, pool.name, images,
                                                             args.n)).items():
                rows.append((mb, clone_t, copy_t))
                print(f"{mb:>4} MB image: clone {fmt(clone_t)}; full copy {fmt(copy_t)}")
    finally:
        daemon.stop()
    small, large = rows[0][1], rows[-1][1]
    ratio = median(large) / median(small)
    print(f"clone time, {SIZES_MB[-1]} MB vs {SIZES_MB[0]} MB image: x{ratio:.2f}")
    if args.record:
        body = ["Root filesystem provisioning on zfs-fuse 0.7 (pool on a sparse file), "
                f"n={args.n} per size (`python -m bench.zfs_provision`).", "",
                "| Image | ZFS clone (median / p90) | Full copy (median / p90) |",
                "|---|---|---|"]
        for mb, clone_t, copy_t in rows:
            body.append(f"| {mb} MB | {median(clone_t) * 1000:.1f} / "
                        f"{percentile(clone_t, 90) * 1000:.1f} ms | "
                        f"{median(copy_t) * 1000:.1f} / {percentile(copy_t, 90) * 1000:.1f} ms |")
        body += ["", f"Clone time of the {SIZES_MB[-1]} MB image relative to the "
                 f"{SIZES_MB[0]} MB one: x{ratio:.2f} (constant time: about 1)."]
        record(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md",
               "ZFS root filesystem provisioning: clone against full copy", "\n".join(body))


if __name__ == "__main__":
    main()
