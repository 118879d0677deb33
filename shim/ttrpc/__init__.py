"""A ttrpc (containerd's RPC over unix sockets) implementation for asyncio.

Layers (style-anchors.md §3.4, §6.3):

* sans-IO core: ``_frame`` (10-byte header, 4 MiB limit), ``_events``, ``_connection``
  (:class:`ServerConnection`, :class:`ClientConnection`); no asyncio, no sockets;
* asyncio transport: :class:`Server` and :class:`Client`.

Wire reference: /work/shared/docs/shim-protocol.md §1.
"""

from __future__ import annotations

from shim.ttrpc._connection import ClientConnection, ServerConnection
from shim.ttrpc._events import (
    ConnectionClosed,
    Event,
    FrameIgnored,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
    StreamError,
)
from shim.ttrpc._frame import MAX_DATA, Flag, FrameHeader, MessageType
from shim.ttrpc._service import ErrorMapper, Method, RequestContext
from shim.ttrpc.client import Client
from shim.ttrpc.errors import (
    ConnectionLost,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    TtrpcError,
)
from shim.ttrpc.server import Server
from shim.ttrpc.status import Code, RpcError, Status

__all__ = [
    "MAX_DATA",
    "Client",
    "ClientConnection",
    "Code",
    "ConnectionClosed",
    "ConnectionLost",
    "ErrorMapper",
    "Event",
    "Flag",
    "FrameHeader",
    "FrameIgnored",
    "LocalProtocolError",
    "Method",
    "MessageType",
    "ProtocolError",
    "RemoteProtocolError",
    "RequestContext",
    "RequestReceived",
    "RequestRejected",
    "ResponseReceived",
    "RpcError",
    "Server",
    "ServerConnection",
    "Status",
    "StreamError",
    "TtrpcError",
]
