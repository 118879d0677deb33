"""One netlink request by hand: delete a link by name. Standard library only.

The ``delete`` action must stay fast and free of heavy imports (DESIGN.md section 2); importing
pyroute2 alone costs 120-250 ms here (``python -X importtime``). Deleting a link is one
RTM_DELLINK message with an IFLA_IFNAME attribute (rtnetlink(7)), so it is written out here
rather than shelling out to ``ip``. The daemon uses pyroute2 (:mod:`network.links`).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from pathlib import Path

from network import netns

RTM_DELLINK = 17  # linux/rtnetlink.h
NLMSG_ERROR = 2  # linux/netlink.h
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
IFLA_IFNAME = 3  # linux/if_link.h
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
_RTATTR = struct.Struct("=HH")  # len, type


def _align(n: int) -> int:
    return (n + 3) & ~3


def dellink_message(ifname: str, seq: int = 1) -> bytes:
    name = ifname.encode() + b"\0"
    attr = _RTATTR.pack(_RTATTR.size + len(name), IFLA_IFNAME) + name
    attr += b"\0" * (_align(len(attr)) - len(attr))
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK,
                          seq, 0) + body


def delete_link(ifname: str, netns_path: str | Path | None = None) -> bool:
    """Delete ``ifname`` in the namespace at ``netns_path`` (None = ours). True if it existed;
    a veth's peer goes with it (veth(4))."""
    sock = netns.route_socket(netns_path) if netns_path else socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, netns.NETLINK_ROUTE)
    with sock:
        sock.settimeout(2.0)
        sock.bind((0, 0))
        sock.send(dellink_message(ifname))
        reply = sock.recv(65536)
    length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(reply)
    if kind != NLMSG_ERROR:
        raise OSError(errno.EPROTO, f"RTM_DELLINK {ifname}: unexpected reply type {kind}")
    (code,) = struct.unpack_from("=i", reply, _NLMSGHDR.size)
    if code == 0:
        return True
    if -code == errno.ENODEV:
        return False
    raise OSError(-code, f"delete link {ifname}: {os.strerror(-code)}")
