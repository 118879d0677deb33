"""Loading a bundle's ``config.json`` (the OCI runtime spec) with errors that name the field.

This is the minimal check the lifecycle needs; the full validator belongs to the OCI fidelity
work. Pure apart from reading the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.errdefs import InvalidArgument, NotFound


def load_spec(bundle: Path) -> dict[str, Any]:
    path = bundle / "config.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{path}: bundle has no config.json") from None
    try:
        spec = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"config.json: not valid JSON: {exc}") from None
    check_spec(spec)
    return spec  # type: ignore[no-any-return]


def check_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        raise InvalidArgument("config.json: must be a JSON object")
    process = spec.get("process")
    if not isinstance(process, dict):
        raise InvalidArgument("process: must be an object")
    args = process.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise InvalidArgument("process.args: must be a non-empty list of strings")
    if not args[0]:
        raise InvalidArgument("process.args[0]: must not be empty")
    env = process.get("env", [])
    if not isinstance(env, list) or not all(isinstance(e, str) and "=" in e for e in env):
        raise InvalidArgument("process.env: must be a list of KEY=VALUE strings")
    root = spec.get("root")
    if not isinstance(root, dict) or not isinstance(root.get("path"), str) or not root["path"]:
        raise InvalidArgument("root.path: must be a non-empty string")


def spec_annotations(spec: dict[str, Any]) -> dict[str, str]:
    value = spec.get("annotations") or {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
