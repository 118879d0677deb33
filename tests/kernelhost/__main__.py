"""``python -m tests.kernelhost prepare|info|console [kernel|pve9]``: warm or inspect the cache.

The optional last word names the flavour (the pytest marker): ``kernel`` (Debian 12, the
default) or ``pve9`` (Debian 13 with its own root filesystem).

prepare  resolve the packages from the archive, fetch the .debs and build everything (the ZFS
         module build takes ~5 minutes once per kernel); later runs then only check stamps
info     what the archive serves now (resolved), the cache entries and their sizes
console  print the console log of the newest batch
"""

from __future__ import annotations

import subprocess
import sys
import time

from tests.kernelhost import cache, config


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "info"
    marker = argv[2] if len(argv) > 2 else "kernel"
    if marker not in config.FLAVOURS:
        print(f"unknown flavour {marker!r}; known: {', '.join(config.FLAVOURS)}")
        return 2
    fl = config.FLAVOURS[marker]
    root = config.cache_root()
    if cmd == "prepare":
        t0 = time.monotonic()
        image = cache.prepare(lambda m: print(m, flush=True), fl)
        print(f"ready in {time.monotonic() - t0:.1f} s: {image.vmlinux}")
        return 0
    if cmd == "info":
        root.mkdir(parents=True, exist_ok=True)
        try:
            print(f"archive now: {cache.resolve_now(root, fl=fl).describe()}")
        except cache.BuildError as e:
            print(f"archive now: cannot resolve: {e}")
        for path, rec in cache._entries(root, fl.name):
            image = cache._complete(root, rec)
            state = image.resolved.describe() if image else "incomplete"
            print(f"entry {path.stem}: {state}")
        print(f"cache {root}")
        if root.exists():
            subprocess.run(["du", "-sh", *sorted(str(p) for p in root.glob("*/*"))
                            + sorted(str(p) for p in root.glob("*") if p.is_dir())],
                           check=False)
        return 0
    if cmd == "console":
        logs = sorted((root / "consoles").glob("*.log"), key=lambda p: p.stat().st_mtime)
        print(logs[-1].read_text() if logs else f"no console logs in {root / 'consoles'}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
