"""The one table from errdefs classes to ttrpc (gRPC) status codes (containerd errgrpc).

containerd turns these codes back into its error classes (``errdefs.FromGRPC``) and its client
and CRI branch on NotFound, AlreadyExists and FailedPrecondition (shim-protocol.md 1.6, 3.5).
"""

from __future__ import annotations

import asyncio
import logging

from runtime import errdefs
from shim.ttrpc import Code, RpcError

log = logging.getLogger(__name__)

CODES: dict[type[errdefs.ErrdefsError], Code] = {
    errdefs.NotFound: Code.NOT_FOUND,
    errdefs.AlreadyExists: Code.ALREADY_EXISTS,
    errdefs.FailedPrecondition: Code.FAILED_PRECONDITION,
    errdefs.InvalidArgument: Code.INVALID_ARGUMENT,
    errdefs.NotImplementedErr: Code.UNIMPLEMENTED,
    errdefs.Unavailable: Code.UNAVAILABLE,
    errdefs.Internal: Code.INTERNAL,
    errdefs.DeadlineExceeded: Code.DEADLINE_EXCEEDED,
    errdefs.Canceled: Code.CANCELLED,
}


def to_status(exc: BaseException) -> tuple[int, str]:
    """Map any exception raised by a handler to (code, message)."""
    if isinstance(exc, RpcError):
        return int(exc.code), exc.message
    if isinstance(exc, errdefs.ErrdefsError):
        return int(CODES.get(type(exc), Code.UNKNOWN)), exc.message
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return int(Code.DEADLINE_EXCEEDED), str(exc) or "deadline exceeded"
    # Unclassified errors are bugs or unexpected system failures: keep the traceback.
    log.error("unclassified error at the RPC edge", exc_info=exc)
    return int(Code.UNKNOWN), f"{type(exc).__name__}: {exc}"
