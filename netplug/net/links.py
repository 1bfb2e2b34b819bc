"""Looking links up by name, and the errno values netplug tolerates."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netplug.net.rtnl import Rtnl

EEXIST = errno.EEXIST
ENODEV = errno.ENODEV
ENOENT = errno.ENOENT
ENOBUFS = errno.ENOBUFS
SIOCGIFMTU = 0x8921
_IFREQ = struct.Struct("16si20x")  # struct ifreq: name, then ifr_mtu in a 24-byte union


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    kind: str
    mac: str
    mtu: int
    master: int
    up: bool


def _link_of(msg) -> Link:
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else ""
    return Link(
        index=msg["index"],
        name=msg.get_attr("IFLA_IFNAME"),
        kind=kind or "",
        mac=msg.get_attr("IFLA_ADDRESS") or "",
        mtu=msg.get_attr("IFLA_MTU") or 0,
        master=msg.get_attr("IFLA_MASTER") or 0,
        up=bool(msg["flags"] & 1),
    )


def random_mac() -> str:
    """A random locally administered unicast MAC."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def index(name: str) -> int | None:
    """The index of link ``name`` in this thread's namespace, or None.

    An ioctl on a throwaway socket: microseconds, where ``find`` decodes every
    attribute of the link (statistics, per-family settings) in pyroute2.
    """
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def mtu(name: str) -> int | None:
    """The MTU of link ``name`` in this thread's namespace, or None: an ioctl, like ``index``."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            reply = fcntl.ioctl(s, SIOCGIFMTU, _IFREQ.pack(name.encode(), 0))
    except OSError:
        return None
    return _IFREQ.unpack(reply)[1]


def find(ipr: IPRoute, name: str) -> Link | None:
    """The link called ``name``, or None when there is none."""
    try:
        return _link_of(ipr.link("get", ifname=name)[0])
    except NetlinkError as e:
        if e.code == ENODEV:
            return None
        raise


def all_links(ipr: IPRoute) -> list[Link]:
    return [_link_of(msg) for msg in ipr.get_links()]


def delete(rt: Rtnl, name: str) -> bool:
    """Delete the link called ``name``; False when it was already gone (idempotent)."""
    try:
        rt.delete_link(name=name)
    except NetlinkError as e:
        if e.code == ENODEV:
            return False
        raise
    return True
