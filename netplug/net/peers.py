"""A VXLAN device's peers in the kernel: FDB, permanent neighbours, onlink routes.

``read`` returns what is programmed, ``apply`` adds and removes entries; what
should be programmed is decided elsewhere (``agent.overlay_plan``, pure).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ndmsg import NUD_PERMANENT

from netplug.net.device_dump import DeviceDump
from netplug.net.links import EEXIST

RTNH_F_ONLINK = 4
NTF_SELF = 2
ENOENT = 2
ESRCH = 3
GONE = (ENOENT, ESRCH, 19)  # deleting what is already gone is fine


@dataclass(frozen=True, slots=True)
class PeerState:
    routes: frozenset[tuple[str, str]] = field(default=frozenset())  # (block CIDR, onlink gw)
    neighbours: frozenset[tuple[str, str]] = field(default=frozenset())  # (gw address, MAC)
    fdb: frozenset[tuple[str, str]] = field(default=frozenset())  # (MAC, remote VTEP)

    def __bool__(self) -> bool:
        return bool(self.routes or self.neighbours or self.fdb)


def read(index: int) -> PeerState:
    """The peers programmed on the VXLAN device ``index`` (of this thread's
    namespace): dumps the kernel filters to that device (``device_dump``)."""
    routes, neighbours = set(), set()
    with DeviceDump() as dump:
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in dump.routes(family, index):
                gateway = msg.get_attr("RTA_GATEWAY")
                if gateway and msg["flags"] & RTNH_F_ONLINK:
                    routes.add((f"{msg.get_attr('RTA_DST')}/{msg['dst_len']}", gateway))
            neighbours.update(
                (msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR"))
                for msg in dump.neighbours(family, index)
                if msg["state"] & NUD_PERMANENT
            )
        fdb = {
            (msg.get_attr("NDA_LLADDR"), msg.get_attr("NDA_DST"))
            for msg in dump.fdb(index)
            if msg.get_attr("NDA_DST")
        }
    return PeerState(frozenset(routes), frozenset(neighbours), frozenset(fdb))


def apply(ipr: IPRoute, index: int, add: PeerState, remove: PeerState) -> None:
    """Program ``add`` and unprogram ``remove``: forwarding entries before the
    routes that use them, and routes removed before what they used."""
    for mac, vtep in sorted(add.fdb):
        _tolerate(
            EEXIST, ipr.fdb, "append", ifindex=index, lladdr=mac, dst=vtep, state=NUD_PERMANENT
        )
    for address, mac in sorted(add.neighbours):
        ipr.neigh("replace", dst=address, lladdr=mac, ifindex=index, state=NUD_PERMANENT)
    for block, gateway in sorted(add.routes):
        ipr.route("replace", dst=block, gateway=gateway, oif=index, flags=RTNH_F_ONLINK)
    for block, gateway in sorted(remove.routes):
        _tolerate(GONE, ipr.route, "del", dst=block, gateway=gateway, oif=index)
    for address, mac in sorted(remove.neighbours):
        _tolerate(GONE, ipr.neigh, "del", dst=address, lladdr=mac, ifindex=index)
    for mac, vtep in sorted(remove.fdb):
        _tolerate(GONE, ipr.fdb, "del", ifindex=index, lladdr=mac, dst=vtep)


def _tolerate(codes, func, *args, **kwargs) -> None:
    codes = codes if isinstance(codes, tuple) else (codes,)
    try:
        func(*args, **kwargs)
    except NetlinkError as e:
        if e.code not in codes:
            raise
