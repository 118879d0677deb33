"""Netlink operations through pyroute2's asyncio-native ``AsyncIPRoute`` (pyroute2 0.9).

Thin: one method per kernel operation, errors mapped to errdefs with the interface named.
Sockets are opened in the target namespace by :func:`network.netns.route_socket` and handed to
pyroute2 as a file descriptor, so pyroute2 never forks (see :mod:`network.netns`).
"""

from __future__ import annotations

import errno
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pyroute2 import AsyncIPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from network import netns
from runtime.errdefs import AlreadyExists, FailedPrecondition, Internal, NotFound

#: 802.1Q is missing when the kernel has no CONFIG_VLAN_8021Q / CONFIG_BRIDGE_VLAN_FILTERING:
#: enabling vlan_filtering or adding a port VLAN answers EOPNOTSUPP (environment.md section 5).
NO_VLAN_ERRNOS = (errno.EOPNOTSUPP,)
#: The bridge's default VLAN every new port gets untagged (bridge default_pvid = 1).
DEFAULT_PVID = 1


NO_VLAN = ("this kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q, "
           "CONFIG_BRIDGE_VLAN_FILTERING)")


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    kind: str
    mtu: int
    vlan_filtering: bool
    master: int


def _errno_error(exc: NetlinkError, what: str) -> Exception:
    if exc.code == errno.EEXIST:
        return AlreadyExists(f"{what}: already exists")
    if exc.code == errno.ENODEV:
        return NotFound(f"{what}: no such interface")
    return Internal(f"{what}: {os.strerror(exc.code)} (errno {exc.code})")


class Links:
    """Netlink in one namespace (``path`` None or "" = the shim's own)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = str(path) if path else ""
        try:
            sock = netns.route_socket(self.path or None)
        except OSError as exc:
            raise FailedPrecondition(f"network namespace {self.path}: {exc.strerror or exc}"
                                     ) from None
        self._ipr = AsyncIPRoute(fileno=sock.detach())

    async def __aenter__(self) -> Links:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._ipr.close()

    # -- reading -------------------------------------------------------------------------------

    async def get(self, name: str) -> LinkInfo | None:
        try:
            (msg,) = await self._ipr.link("get", ifname=name)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise _errno_error(exc, f"interface {name}") from None
        info = msg.get("IFLA_LINKINFO")
        kind = info.get("IFLA_INFO_KIND") if info is not None else None
        data = info.get("IFLA_INFO_DATA") if info is not None else None
        filtering = data.get("IFLA_BR_VLAN_FILTERING") if kind == "bridge" and data else 0
        return LinkInfo(index=msg["index"], name=name, kind=kind or "", mtu=msg.get("IFLA_MTU"),
                        vlan_filtering=bool(filtering), master=msg.get("IFLA_MASTER") or 0)

    async def names(self) -> list[str]:
        return [str(m.get("IFLA_IFNAME")) async for m in await self._ipr.link("dump")]

    # -- bridges -------------------------------------------------------------------------------

    async def create_bridge(self, name: str, mtu: int,
                            address: ipaddress.IPv4Interface | None) -> int:
        await self._call("link", f"create bridge {name}", "add", ifname=name, kind="bridge",
                         mtu=mtu)
        info = await self.get(name)
        if info is None:
            raise Internal(f"bridge {name} vanished after creation")
        if address is not None:
            await self._call("addr", f"address {address} on bridge {name}", "add",
                             index=info.index, address=str(address.ip),
                             prefixlen=address.network.prefixlen)
        await self._call("link", f"bring bridge {name} up", "set", index=info.index, state="up")
        return info.index

    async def enable_vlan_filtering(self, bridge: LinkInfo) -> None:
        try:
            await self._ipr.link("set", index=bridge.index, kind="bridge", br_vlan_filtering=1)
        except NetlinkError as exc:
            if exc.code in NO_VLAN_ERRNOS:
                raise FailedPrecondition(f"bridge {bridge.name}: cannot enable VLAN filtering: "
                                         f"{NO_VLAN}") from None
            raise _errno_error(exc, f"bridge {bridge.name} vlan_filtering") from None

    async def create_vlan(self, name: str, link: LinkInfo, vid: int) -> int:
        """An 802.1Q device ``name`` on ``link`` for VLAN ``vid``, up; returns its index."""
        try:
            await self._ipr.link("add", ifname=name, kind="vlan", link=link.index, vlan_id=vid)
        except NetlinkError as exc:
            if exc.code in NO_VLAN_ERRNOS:
                raise FailedPrecondition(f"cannot create VLAN device {name}: {NO_VLAN}"
                                         ) from None
            raise _errno_error(exc, f"create VLAN device {name}") from None
        info = await self.get(name)
        if info is None:
            raise Internal(f"VLAN device {name} vanished after creation")
        await self.up(info.index, name)
        return info.index

    async def delete(self, name: str) -> bool:
        """Delete a link (a veth takes its peer along, veth(4)); False if it did not exist."""
        try:
            await self._ipr.link("del", ifname=name)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False
            raise _errno_error(exc, f"delete interface {name}") from None
        return True

    # -- veth ----------------------------------------------------------------------------------

    async def create_veth(self, host: str, peer: str, peer_netns: Path, mac: str,
                          mtu: int) -> int:
        """A veth pair whose peer is created directly inside ``peer_netns`` under its final
        name (no rename race), with the container's MAC and MTU; returns the host end's index."""
        fd = os.open(peer_netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            await self._call("link", f"create veth {host}", "add", ifname=host, kind="veth",
                             mtu=mtu, peer={"ifname": peer, "net_ns_fd": fd, "address": mac,
                                            "mtu": mtu})
        finally:
            os.close(fd)
        info = await self.get(host)
        if info is None:
            raise Internal(f"veth {host} vanished after creation")
        return info.index

    async def attach(self, index: int, name: str, bridge: LinkInfo) -> None:
        await self._call("link", f"attach {name} to bridge {bridge.name}", "set", index=index,
                         master=bridge.index)

    async def port_vlan(self, index: int, name: str, vid: int) -> None:
        """Make the port an access port of VLAN ``vid``: ``bridge vlan add dev <port> vid <vid>
        pvid untagged``, and drop the default VLAN 1 (what Proxmox's tap_plug does for
        ``tag=``, proxmox-api.md section 4.5)."""
        try:
            await self._ipr.vlan_filter("add", index=index,
                                        vlan_info={"vid": vid, "flags": ["pvid", "untagged"]})
            if vid != DEFAULT_PVID:
                await self._ipr.vlan_filter("del", index=index, vlan_info={"vid": DEFAULT_PVID})
        except NetlinkError as exc:
            if exc.code in NO_VLAN_ERRNOS:
                raise FailedPrecondition(f"{name}: cannot join VLAN {vid}: {NO_VLAN}") from None
            raise _errno_error(exc, f"VLAN {vid} on {name}") from None

    async def up(self, index: int, name: str) -> None:
        await self._call("link", f"bring {name} up", "set", index=index, state="up")

    # -- inside the container's namespace --------------------------------------------------------

    async def configure_peer(self, name: str, address: ipaddress.IPv4Interface,
                             gateway: ipaddress.IPv4Address | None) -> None:
        """Loopback up, the address on ``name``, ``name`` up, and the default route."""
        lo = await self.get("lo")
        if lo is not None:
            await self.up(lo.index, "lo")
        eth = await self.get(name)
        if eth is None:
            raise Internal(f"{name} missing in the container's network namespace")
        await self._call("addr", f"address {address} on {name}", "add", index=eth.index,
                         address=str(address.ip), prefixlen=address.network.prefixlen)
        await self.up(eth.index, name)
        if gateway is not None:
            await self._call("route", f"default route via {gateway}", "add", dst="0.0.0.0/0",
                             gateway=str(gateway), oif=eth.index)

    # -- helpers -------------------------------------------------------------------------------

    async def _call(self, method: str, what: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self._ipr, method)(*args, **kwargs)
        except NetlinkError as exc:
            raise _errno_error(exc, what) from None
