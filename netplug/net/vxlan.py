"""A network's VXLAN device: the host's tunnel endpoint toward the other hosts.

Learning is off and nothing floods: the agent programs every peer explicitly
(an FDB entry per remote VTEP, a permanent neighbour entry and an onlink
route per remote block - see ``peers``), as flannel's vxlan backend does.
The device holds this host's block network address as a /32, so that
traffic the host itself sends to other blocks has a source they can reach.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netplug.net import NetError
from netplug.net.addresses import Interface, ensure_addresses
from netplug.net.links import EEXIST, Link, find
from netplug.net.mtu import default_route_device
from netplug.net.seen import Seen


def device_name(vni: int) -> str:
    return f"npvx{vni}"


@dataclass(frozen=True, slots=True)
class Underlay:
    link: Link
    address: IPv4Address  # this host's VTEP address


def underlay(ipr: IPRoute, device: str | None) -> Underlay | None:
    """The underlay interface (``device``, else the default route's) and its first
    IPv4 address; None when there is none (a host with no way to other hosts)."""
    name = device or default_route_device(ipr)
    link = find(ipr, name) if name else None
    if link is None:
        if device:
            raise NetError(f'vxlan.device {device} does not exist: fix "vxlan.device"')
        return None
    for msg in ipr.get_addr(family=socket.AF_INET, index=link.index):
        return Underlay(link, ip_address(msg.get_attr("IFA_ADDRESS")))
    if device:
        raise NetError(f"vxlan.device {device} has no IPv4 address to use as the VTEP")
    return None


@dataclass(frozen=True, slots=True)
class VxlanSpec:
    """What ADD wants of a network's VXLAN device."""

    vni: int
    port: int
    under: Underlay
    mtu: int
    addresses: tuple[Interface, ...]  # this host's block network addresses


def ensure_vxlan(ipr: IPRoute, spec: VxlanSpec, seen: Seen) -> Link:
    """The network's VXLAN device, up, with ``spec.mtu`` and ``spec.addresses``
    (idempotent, race-safe; addresses as ``addresses.ensure_addresses`` checks them).

    Raises NetError when a device of that name exists with another kind or VNI.
    """
    vni, under = spec.vni, spec.under
    name = device_name(vni)
    link = find(ipr, name)
    if link is None:
        try:
            ipr.link(
                "add",
                ifname=name,
                kind="vxlan",
                vxlan_id=vni,
                vxlan_local=str(under.address),
                vxlan_link=under.link.index,
                vxlan_port=spec.port,
                vxlan_learning=0,
                mtu=spec.mtu,
                state="up",
            )
        except NetlinkError as e:
            if e.code != EEXIST:
                raise
        link = find(ipr, name)
    if link is None or link.kind != "vxlan":
        raise NetError(f"interface {name} exists and is not a VXLAN device: remove it")
    if not link.up or link.mtu != spec.mtu:
        # The network's MTU, as the bridge and veths get it at every ADD: a device
        # made under an older config (or underlay) must not keep the one it had.
        ipr.link("set", index=link.index, state="up", mtu=spec.mtu)
    ensure_addresses(ipr, link.index, spec.addresses, seen)
    return link
