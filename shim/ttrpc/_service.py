"""Service registration and unary dispatch: route, decode, call, encode, map errors.

Mirrors Go ttrpc's ``services.go`` (style-anchors.md §3.1): an unknown service or method is
Unimplemented with the message ``service <name>`` / ``method <name>`` (shim-protocol.md §1.6),
the deadline comes from ``timeout_nano``, and unmapped handler errors become Unknown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError, EncodeError
from google.protobuf.message import Message as ProtoMessage

from shim.ttrpc._events import RequestReceived
from shim.ttrpc.metadata import metadata_to_dict
from shim.ttrpc.status import Code, RpcError, Status

__all__ = ["ErrorMapper", "Method", "RequestContext", "ServiceRegistry"]

log = logging.getLogger(__name__)

ReqT = TypeVar("ReqT", bound=ProtoMessage)
RespT = TypeVar("RespT", bound=ProtoMessage)

ErrorMapper = Callable[[BaseException], tuple[int, str]]
"""Maps a handler exception (not :class:`RpcError`) to a ``(code, message)`` answer."""

DEADLINE_MESSAGE = "context deadline exceeded"  # Go's context.DeadlineExceeded text


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a handler may know about its request besides the decoded message.

    ``metadata`` maps lower-cased keys to their values in wire order (§1.7). ``deadline`` is
    in the event loop's clock (``loop.time()``), None when the caller sent no timeout.
    """

    service: str
    method: str
    stream_id: int
    metadata: dict[str, list[str]] = field(default_factory=dict)
    deadline: float | None = None

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline (may be negative), or None without a deadline."""
        if self.deadline is None:
            return None
        return self.deadline - asyncio.get_running_loop().time()


@dataclass(frozen=True, slots=True)
class Method(Generic[ReqT, RespT]):
    """One unary RPC: the request message class and ``async handler(request, ctx) -> response``."""

    request_type: type[ReqT]
    handler: Callable[[ReqT, RequestContext], Awaitable[RespT]]


def default_error_mapper(exc: BaseException) -> tuple[int, str]:
    """Go's ``convertCode`` fallback: anything unmapped is Unknown with its text."""
    return int(Code.UNKNOWN), str(exc)


class ServiceRegistry:
    """The ``service -> method -> Method`` table and the dispatch of one request."""

    def __init__(self, error_mapper: ErrorMapper | None = None) -> None:
        self._services: dict[str, dict[str, Method[Any, Any]]] = {}
        self._error_mapper = error_mapper

    def register(self, name: str, methods: Mapping[str, Method[Any, Any]]) -> None:
        """Add service ``name``; registering the same name twice is a bug (ValueError)."""
        if name in self._services:
            raise ValueError(f"service {name!r} is already registered")
        self._services[name] = dict(methods)

    async def dispatch(self, request: RequestReceived) -> tuple[bytes, Status | None]:
        """Run one request to completion and return ``(payload, error status or None)``.

        Never raises except :class:`asyncio.CancelledError` when the task is cancelled from
        outside (connection closed, shutdown); then no response must be sent.
        """
        try:
            return await self._call(request), None
        except RpcError as exc:
            return b"", exc.status

    async def _call(self, request: RequestReceived) -> bytes:
        method = self._lookup(request.service, request.method)
        message = _decode(method.request_type, request.payload)
        ctx = _context(request)
        try:
            async with asyncio.timeout_at(ctx.deadline) as scope:
                result = await method.handler(message, ctx)
        except RpcError:
            raise
        except TimeoutError as exc:
            if scope.expired():
                raise RpcError(Code.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from exc
            raise self._map_error(request, exc) from exc
        except Exception as exc:
            raise self._map_error(request, exc) from exc
        return _encode(result)

    def _lookup(self, service: str, method: str) -> Method[Any, Any]:
        methods = self._services.get(service)
        if methods is None:
            raise RpcError(Code.UNIMPLEMENTED, f"service {service}")
        found = methods.get(method)
        if found is None:
            raise RpcError(Code.UNIMPLEMENTED, f"method {method}")
        return found

    def _map_error(self, request: RequestReceived, exc: Exception) -> RpcError:
        where = f"/{request.service}/{request.method}"
        if self._error_mapper is None:
            log.error("unmapped error in %s", where, exc_info=exc)
            return RpcError(*default_error_mapper(exc))
        try:
            code, message = self._error_mapper(exc)
        except Exception:
            log.exception("error_mapper failed for %s; answering Unknown", where)
            return RpcError(*default_error_mapper(exc))
        log.debug("%s failed with code %s: %s", where, code, message)
        return RpcError(code, message)


def _decode(request_type: type[ReqT], payload: bytes) -> ReqT:
    # Internal, not InvalidArgument: Go ttrpc's unmarshal callback answers a payload decode
    # failure with codes.Internal (shim-protocol.md §1.6, "payload decode/encode failure").
    # InvalidArgument is reserved for an undecodable Request envelope, handled in the core.
    message = request_type()
    try:
        message.ParseFromString(payload)
    except DecodeError as exc:
        raise RpcError(Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}") from exc
    return message


def _encode(result: object) -> bytes:
    if not isinstance(result, ProtoMessage):
        raise RpcError(Code.INTERNAL, f"ttrpc: handler returned {type(result).__name__}")
    try:
        return result.SerializeToString()
    except EncodeError as exc:
        raise RpcError(Code.INTERNAL, f"ttrpc: error marshalling response: {exc}") from exc


def _context(request: RequestReceived) -> RequestContext:
    deadline = None
    if request.timeout_ns > 0:
        deadline = asyncio.get_running_loop().time() + request.timeout_ns / 1e9
    return RequestContext(
        request.service, request.method, request.stream_id,
        metadata_to_dict(request.metadata), deadline,
    )
