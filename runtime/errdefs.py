"""The one error vocabulary of the project (containerd's errdefs classes).

Raised anywhere; turned into ttrpc status codes only at the RPC edge (``shim.status_map``).
A leaf module: standard library only, so ``storage`` and ``network`` may import it too.
Messages end with the class text (": not found" …) because containerd's client resolves
FailedPrecondition subclasses by message suffix (containerd/errdefs ``ToNative``).
"""

from __future__ import annotations

from typing import ClassVar


class ErrdefsError(Exception):
    """Base of every classified error. ``kind`` names the class on the wire."""

    kind: ClassVar[str] = "unknown"
    registry: ClassVar[dict[str, type[ErrdefsError]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind in ErrdefsError.registry:
            raise TypeError(f"duplicate errdefs kind {cls.kind!r}")
        ErrdefsError.registry[cls.kind] = cls

    def __init__(self, message: str) -> None:
        suffix = f": {self.kind}"
        super().__init__(message if message.endswith(suffix) else message + suffix)

    @property
    def message(self) -> str:
        return str(self)


class NotFound(ErrdefsError):
    kind = "not found"


class AlreadyExists(ErrdefsError):
    kind = "already exists"


class FailedPrecondition(ErrdefsError):
    kind = "failed precondition"


class InvalidArgument(ErrdefsError):
    kind = "invalid argument"


class NotImplementedErr(ErrdefsError):
    kind = "not implemented"


class Unavailable(ErrdefsError):
    kind = "unavailable"


class Internal(ErrdefsError):
    kind = "internal"


class DeadlineExceeded(ErrdefsError):
    kind = "deadline exceeded"


class Canceled(ErrdefsError):
    kind = "canceled"
