"""The official Proxmox VE API schema, loaded and turned into a router.

The schema files are Proxmox's own API dump (pve-docs ``api-viewer/apidata.js``, and the LXC
subsets of it for PVE 9.1 and 9.2 in ``shared/pve-api``; provenance in that folder's README).
Routes, parameters, ``allowtoken`` and ``protected`` all come from there, so the stand-in
accepts exactly what a node of that version accepts.

Indexed keys: the dump collapses ``net0``..``net31`` into ``net[n]`` (pve-common
``PVE/RESTHandler.pm``, ``api_clone_schema``); the real ranges are in pve-container
``src/PVE/LXC/Config.pm`` (``$MAX_LXC_NETWORKS = 32``, ``MAX_MOUNT_POINTS = 256``,
``MAX_UNUSED_DISKS = 256``, ``MAX_DEVICES = 256``) and are restored here.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: How many of each indexed key a CT may have (pve-container src/PVE/LXC/Config.pm).
INDEX_LIMITS = {"net": 32, "mp": 256, "unused": 256, "dev": 256}

SCHEMA_FILES = {
    "9.1": "pve-api-lxc-subset-9.1.json",
    "9.2": "pve-api-lxc-subset-9.2.json",
}


def schema_dir() -> Path | None:
    """Where the schema files are: ``$PVE_API_SCHEMA_DIR``, else the shared folder beside the
    worktrees (``/work/shared/pve-api``), else None."""
    env = os.environ.get("PVE_API_SCHEMA_DIR")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [p / "shared" / "pve-api" for p in here.parents]
    for c in candidates:
        if (c / SCHEMA_FILES["9.2"]).is_file():
            return c
    return None


def load_paths(version: str = "9.2", folder: Path | None = None) -> dict[str, Any]:
    """The ``paths`` map of the subset file for ``version`` (``{path: node}``)."""
    folder = folder or schema_dir()
    if folder is None:
        raise FileNotFoundError("PVE API schema not found; set PVE_API_SCHEMA_DIR to the folder "
                                "holding pve-api-lxc-subset-9.2.json")
    data = json.loads((folder / SCHEMA_FILES[version]).read_text())
    return dict(data["paths"])


def expand_indexed(properties: dict[str, Any]) -> dict[str, Any]:
    """``net[n]`` → ``net0``..``net31`` (and so on), as the live Perl schema has them."""
    out: dict[str, Any] = {}
    for key, prop in properties.items():
        m = re.fullmatch(r"([a-z]+)\[n\]", key)
        if m and m.group(1) in INDEX_LIMITS:
            for i in range(INDEX_LIMITS[m.group(1)]):
                out[f"{m.group(1)}{i}"] = prop
        else:
            out[key] = prop
    return out


@dataclass(frozen=True)
class Method:
    """One method definition of one path, as the schema declares it."""

    path: str           # schema path, e.g. /nodes/{node}/lxc/{vmid}/config
    http: str           # GET, POST, PUT, DELETE
    name: str           # the Perl handler name, e.g. update_vm
    properties: dict[str, Any]
    additional: bool    # additionalProperties (0 for every method in the dump)
    allowtoken: bool
    protected: bool
    returns: dict[str, Any]
    permissions: dict[str, Any]


class Router:
    """Matches ``/api2/json/...`` paths against the schema's path templates."""

    def __init__(self, paths: dict[str, Any]) -> None:
        self.routes: list[tuple[re.Pattern[str], str, dict[str, Method]]] = []
        for path, node in paths.items():
            methods: dict[str, Method] = {}
            for http, info in (node.get("info") or {}).items():
                params = info.get("parameters") or {}
                methods[http] = Method(
                    path=path, http=http, name=info.get("name", ""),
                    properties=expand_indexed(params.get("properties") or {}),
                    additional=bool(params.get("additionalProperties", 0)),
                    # pve-common JSONSchema.pm $method_schema: allowtoken defaults to 1.
                    allowtoken=bool(info.get("allowtoken", 1)),
                    protected=bool(info.get("protected", 0)),
                    returns=info.get("returns") or {},
                    permissions=info.get("permissions") or {})
            regex = "^" + re.sub(r"\\\{([a-z_]+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$"
            self.routes.append((re.compile(regex), path, methods))

    def match(self, rel: str) -> tuple[str, dict[str, str], dict[str, Method]] | None:
        """``(schema path, path params, methods)`` for a relative path, or None."""
        rel = rel.rstrip("/") or "/"
        for regex, path, methods in self.routes:
            m = regex.match(rel)
            if m:
                return path, m.groupdict(), methods
        return None
