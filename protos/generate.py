"""Regenerate the checked-in protobuf modules from the .proto files in this folder.

Run from the repository root: ``python -m protos.generate [OUT_DIR]``. The import path is the
repository root (``-I .``), so generated modules import each other as ``protos.…``; the protobuf
*package* names (``containerd.task.v2`` …) are what goes on the wire and are unaffected.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "protos").rglob("*.proto"))


def generate(out_dir: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = ["protoc", "-I", str(ROOT), "-I", include,
            f"--python_out={out_dir}", f"--pyi_out={out_dir}", *proto_files()]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit status {rc}")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    generate(out)


if __name__ == "__main__":
    main()
