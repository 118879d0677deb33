"""Status codes and the RPC error that carries them (shim-protocol.md §1.6).

Errors travel on the wire only as ``Response.status`` (a ``google.rpc.Status``) with gRPC code
numbers. This module is generic: mapping domain errors (errdefs) to codes is the caller's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from shim.ttrpc.errors import TtrpcError

__all__ = ["Code", "RpcError", "Status"]


class Code(IntEnum):
    """gRPC status codes, numbered as on the wire."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def _as_code(code: int) -> Code | int:
    """Return ``Code(code)`` when the number is known, else the bare int (peers may send any)."""
    try:
        return Code(code)
    except ValueError:
        return code


@dataclass(frozen=True, slots=True)
class Status:
    """A decoded ``google.rpc.Status`` (``details`` are not modelled; nobody here sends them)."""

    code: int
    message: str = ""

    @property
    def ok(self) -> bool:
        """True for code 0, which the Go client treats exactly like an absent status."""
        return self.code == Code.OK


class RpcError(TtrpcError):
    """A call that ended with a non-OK status.

    Handlers raise it to answer that status; :meth:`Client.call` raises it when the server
    answered one (or when the call failed locally with a status-like cause, e.g. a deadline).
    """

    def __init__(self, code: int, message: str = "") -> None:
        self.code: Code | int = _as_code(code)
        self.message = message
        super().__init__(code, message)

    @property
    def status(self) -> Status:
        """This error as a :class:`Status`."""
        return Status(int(self.code), self.message)

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, Code) else str(self.code)
        return f"{name}: {self.message}"

    def __repr__(self) -> str:
        return f"RpcError({self.code!r}, {self.message!r})"
