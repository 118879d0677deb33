"""Errors as the Proxmox API server answers them.

pve-manager ``PVE/HTTPServer.pm`` ``rest_handler`` and pve-http-server ``Formatter/Standard.pm``:
a handler's ``die`` is HTTP 500 with the first line of the text as the reason phrase and
``{"data":null,"message":"<text>"}`` as body; ``raise_param_exc`` (and schema validation) is
400 "Parameter verification failed." with an ``errors`` map; ``raise_perm_exc`` is 403
"Permission check failed (<what>)" (pve-common ``src/PVE/Exception.pm``).
"""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message if message.endswith("\n") else message + "\n"
        self.errors = errors


def die(message: str) -> ApiError:
    """A plain ``die`` in a handler: 500."""
    return ApiError(500, message)


def param_exc(errors: dict[str, str]) -> ApiError:
    return ApiError(400, "Parameter verification failed.", errors)


def perm_exc(what: str | None = None) -> ApiError:
    return ApiError(403, "Permission check failed" + (f" ({what})" if what else ""))
