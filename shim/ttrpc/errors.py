"""The exception hierarchy of the ttrpc package.

One root, :class:`TtrpcError`. Protocol errors follow h11's split (style-anchors.md §3.2):
:class:`LocalProtocolError` means *we* misused the API (a bug in our code, e.g. answering a
stream twice or sending an oversized frame); :class:`RemoteProtocolError` means the peer sent
bytes that cannot be decoded and the stream cannot be resynchronised, so the connection must be
closed. :class:`ConnectionLost` is what a client call raises when its connection goes away.
"""

from __future__ import annotations

__all__ = [
    "ConnectionLost",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "TtrpcError",
]


class TtrpcError(Exception):
    """Root of every exception raised by :mod:`shim.ttrpc`."""


class ProtocolError(TtrpcError):
    """A violation of the ttrpc wire protocol (shim-protocol.md §1)."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol forbids; this indicates a bug in the caller."""


class RemoteProtocolError(ProtocolError):
    """The peer sent a byte stream we cannot decode; the connection must be closed."""


class ConnectionLost(TtrpcError, ConnectionError):
    """The connection closed (EOF, I/O error, protocol error, or ``close()``).

    Raised by pending and later client calls on that connection.
    """
