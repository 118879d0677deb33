"""Privilege checks from the schema's ``permissions`` (pve-access-control
``src/PVE/RPCEnvironment.pm`` ``check_api2_permissions`` and ``check_full``).

The model is small on purpose: a caller either has every privilege (``None``: root@pam, and
by default the stand-in's token, like a ``privsep=0`` token of root@pam) or a fixed set of
privilege names valid on every path (a token with ``privsep=1`` and one ACL on ``/``). That is
enough to make a call fail the way a node fails it: 403 ``Permission check failed (<path>,
<privilege>)`` naming the path and the missing privilege (``check_full``: all privileges
required, the first missing one named; with ``any``, all of them joined by ``|``).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from tests.pvestandin.errors import ApiError, perm_exc


def check_privs(privs: Collection[str] | None, path: str, wanted: list[str],
                any_of: bool = False) -> None:
    """RPCEnvironment.pm check_full for one ``(path, privileges)`` pair."""
    if privs is None:
        return
    if any_of:
        if not any(p in privs for p in wanted):
            raise perm_exc(f"{path}, {'|'.join(wanted)}")
        return
    for p in wanted:
        if p not in privs:
            raise perm_exc(f"{path}, {p}")


def _fill(path: str, params: dict[str, Any]) -> str:
    return re.sub(r"\{([a-z_-]+)\}", lambda m: str(params.get(m.group(1), m.group(0))), path)


def check_schema(privs: Collection[str] | None, permissions: dict[str, Any] | None,
                 params: dict[str, Any]) -> None:
    """The method's declared check; ``user: all`` and checks the stand-in does not model
    (``userid-param``, …) pass."""
    if privs is None or not permissions or "check" not in permissions:
        return
    _eval(privs, permissions["check"], params)


def _eval(privs: Collection[str], check: list[Any], params: dict[str, Any]) -> None:
    op = check[0]
    if op == "perm":
        path, wanted = _fill(check[1], params), list(check[2])
        opts = dict(zip(check[3::2], check[4::2], strict=False))
        if "require_param" in opts and opts["require_param"] not in params:
            raise perm_exc()
        check_privs(privs, path, wanted, any_of=bool(opts.get("any")))
    elif op == "and":
        for sub in check[1:]:
            _eval(privs, sub, params)
    elif op == "or":
        first: ApiError | None = None
        for sub in check[1:]:
            try:
                _eval(privs, sub, params)
                return
            except ApiError as e:
                first = first or e
        raise first or perm_exc()
