"""The overlay MTU: what fits in the underlay after VXLAN's encapsulation."""

from __future__ import annotations

import socket

from pyroute2 import IPRoute

from netplug.net.links import find

# Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14); IPv6 outer is 20 more.
VXLAN_OVERHEAD_V4 = 50
VXLAN_OVERHEAD_V6 = 70
DEFAULT_UNDERLAY_MTU = 1500


def default_route_device(ipr: IPRoute) -> str | None:
    """The interface of this namespace's IPv4 default route, if it has one."""
    for msg in ipr.get_routes(family=socket.AF_INET, table=254):
        if not msg.get_attr("RTA_DST") and msg.get_attr("RTA_OIF"):
            found = ipr.link("get", index=msg.get_attr("RTA_OIF"))[0]
            return found.get_attr("IFLA_IFNAME")
    return None


def underlay_mtu(ipr: IPRoute, device: str | None) -> int:
    """MTU of ``device`` (default: the default route's); 1500 when there is none."""
    name = device or default_route_device(ipr)
    link = find(ipr, name) if name else None
    return link.mtu if link is not None else DEFAULT_UNDERLAY_MTU


def overlay_mtu(ipr: IPRoute, device: str | None) -> int:
    """The underlay's MTU minus the VXLAN overhead: what ``"mtu": 0`` means."""
    return underlay_mtu(ipr, device) - VXLAN_OVERHEAD_V4
