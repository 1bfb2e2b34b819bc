"""Addresses and routes on a link, added idempotently."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from ipaddress import IPv4Interface, IPv6Interface, ip_interface

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netplug.net.links import EEXIST
from netplug.net.seen import Seen

Interface = IPv4Interface | IPv6Interface

# Skip duplicate address detection: the IPAM already guarantees uniqueness, and
# DAD would leave a fresh IPv6 address "tentative" (unusable) for about a second.
IFA_F_NODAD = 0x02


def flags_for(address: Interface) -> int:
    """The IFA flags a container or bridge address is added with."""
    return IFA_F_NODAD if address.version == 6 else 0


def ensure_addresses(ipr: IPRoute, index: int, wanted: Iterable[Interface], seen: Seen) -> None:
    """Add each of ``wanted`` to link ``index`` unless ``seen`` knows it is there
    (and the host still has it: a deleted gateway is added again); records
    what it added."""
    for address in seen.missing(index, wanted):
        add_address(ipr, index, address)
        seen.saw_address(index, address)


def add_address(ipr: IPRoute, index: int, address: Interface) -> None:
    """Add ``address`` to link ``index``; present already is fine."""
    kwargs = {"index": index, "address": str(address.ip), "prefixlen": address.network.prefixlen}
    if flags := flags_for(address):
        kwargs["flags"] = flags
    try:
        ipr.addr("add", **kwargs)
    except NetlinkError as e:
        if e.code != EEXIST:
            raise


def addresses(ipr: IPRoute, index: int) -> set[Interface]:
    """Global addresses on link ``index`` (link-local IPv6 left out)."""
    found: set[Interface] = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_addr(family=family, index=index):
            addr = ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
            if not addr.ip.is_link_local:
                found.add(addr)
    return found


def routes_via(ipr: IPRoute, index: int) -> Iterable[tuple[str, str | None]]:
    """(destination CIDR, gateway) of the main-table routes out of link ``index``."""
    for family, default in ((socket.AF_INET, "0.0.0.0/0"), (socket.AF_INET6, "::/0")):
        for msg in ipr.get_routes(family=family, oif=index, table=254):
            dst = msg.get_attr("RTA_DST")
            yield (f"{dst}/{msg['dst_len']}" if dst else default, msg.get_attr("RTA_GATEWAY"))
