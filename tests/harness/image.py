"""A local busybox OCI image, built with the standard library only (no registry is reachable).

The result is an OCI image-layout tar that ``ctr images import`` accepts without ``--base-name``:
containerd names the image from the ``io.containerd.image.name`` annotation of the manifest
descriptor in ``index.json``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from tests.harness.rootfs import populate_busybox_rootfs

DEFAULT_REF = "localhost/lxcri-busybox:test"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Same bytes on every build: no timestamps or host user names in the layer.
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _layer_tar(root: Path) -> bytes:
    """An uncompressed tar of ``root``, entries sorted so the digest is reproducible."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
        for rel in paths:
            tar.add(root / rel, arcname=rel, recursive=False, filter=_normalize)
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    # mtime=0 and no file name keep the gzip header deterministic too.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_busybox_image(out_tar: Path, ref: str = DEFAULT_REF,
                        cmd: list[str] | None = None) -> Path:
    """Write an OCI image-layout tar of a busybox image named ``ref`` to ``out_tar``, whose
    default command is ``cmd`` (``/bin/sh``)."""
    with tempfile.TemporaryDirectory(prefix="lxcri-img-") as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        populate_busybox_rootfs(root)
        layer = _layer_tar(root)
    layer_gz = _gzip(layer)
    config = _json({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": [PATH_ENV], "Cmd": cmd or ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        "history": [{"created_by": "proxmox-lxcri tests.harness.image (busybox-static)"}],
    })
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": MT_LAYER, "digest": _digest(layer_gz), "size": len(layer_gz)}],
    })
    index = _json({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MT_MANIFEST,
            "digest": _digest(manifest),
            "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": ref,
                "org.opencontainers.image.ref.name": ref,
            },
        }],
    })
    files: list[tuple[str, bytes]] = [
        ("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
        ("index.json", index),
    ]
    files += [(f"blobs/sha256/{_digest(b)[7:]}", b) for b in (layer_gz, config, manifest)]

    out_tar.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out_tar.with_name(out_tar.name + ".part")
    with tarfile.open(tmp_out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            tar.addfile(_normalize(_dir_info(d)))
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(_normalize(info), io.BytesIO(data))
    os.replace(tmp_out, out_tar)
    return out_tar


def _dir_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info
