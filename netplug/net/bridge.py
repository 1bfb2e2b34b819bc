"""The host bridge that a network's containers and its VXLAN device share."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netplug.net import NetError
from netplug.net.addresses import Interface, ensure_addresses
from netplug.net.links import EEXIST, ENOBUFS, ENOENT, Link, find, index, random_mac
from netplug.net.links import mtu as link_mtu
from netplug.net.rtnl import Rtnl
from netplug.net.seen import Seen


class GatewayElsewhere(NetError):
    """A gateway the bridge is to hold is another link's: the network's bridge on
    this host has another name than the config's (changed while it has containers)."""


@dataclass(frozen=True, slots=True)
class BridgeSpec:
    """What ADD wants of a network's bridge."""

    name: str
    mtu: int
    gateways: tuple[Interface, ...]


def ensure_bridge(ipr: IPRoute, spec: BridgeSpec, seen: Seen) -> Link:
    """The bridge ``spec.name``, up, with its MTU and every gateway address on it.

    The MTU is checked on every call: the kernel puts a bridge whose MTU nobody
    set back to 1500 when its last port leaves. A bridge in ``seen`` with an
    unchanged index is taken as it was, but for its MTU; its gateways as
    ``addresses.ensure_addresses`` checks them. Idempotent and safe against a
    concurrent creator (EEXIST is success). Raises NetError when the name
    exists and is not a bridge.
    """
    name, mtu = spec.name, spec.mtu
    link = _known(ipr, name, seen)
    if link is None:
        # A new bridge for gateways another link holds: the config's "bridge" changed
        # while the network has containers here. (On the network's own bridge, a
        # gateway someone moved elsewhere is put back, below.)
        _require_gateways_free(ipr, name, spec.gateways)
        link = _create(ipr, name, mtu)
    if link.kind != "bridge":
        raise NetError(
            f"interface {name} exists and is a {link.kind or 'device'}, not a bridge: "
            f'set "bridge" in the network config to another name'
        )
    if seen.link(name) is None:  # new to this process: made by an older version?
        call_netfilter(ipr, link.index)
    if link.mtu != mtu or not link.up:
        # An MTU set here (not at creation) also stops the kernel from resetting it.
        ipr.link("set", index=link.index, mtu=mtu, state="up")
        link = find(ipr, name) or link
    seen.saw_link(link)
    ensure_addresses(ipr, link.index, spec.gateways, seen)
    return link


def _require_gateways_free(ipr: IPRoute, name: str, gateways: Iterable[Interface]) -> None:
    """Raise GatewayElsewhere when a link other than bridge ``name`` holds one of
    ``gateways``: a second bridge with the block's gateway would route the block
    to one of the two, and the other's containers would reach nothing. One
    address dump per family, only when a bridge is to be made.

    The holder is compared by name, read after the dump: a concurrent ADD may
    have made the bridge, and put the gateway on it, since this one found none.
    """
    for family, af in ((4, socket.AF_INET), (6, socket.AF_INET6)):
        wanted = {str(g.ip) for g in gateways if g.version == family}
        if not wanted:
            continue
        for msg in ipr.get_addr(family=af):
            address = msg.get_attr("IFA_ADDRESS")
            if address not in wanted:
                continue
            holder = _name_of(ipr, msg["index"])
            if holder != name:
                raise GatewayElsewhere(
                    f"gateway {address} of this network is on {holder} already, and the "
                    f'config names bridge {name}: set "bridge" back to {holder}, or DEL the '
                    f"network's containers on this host and delete {holder} first"
                )


def _name_of(ipr: IPRoute, link_index: int) -> str:
    """The name of a link in ``ipr``'s namespace (not necessarily this thread's)."""
    try:
        return ipr.link("get", index=link_index)[0].get_attr("IFLA_IFNAME")
    except NetlinkError:
        return f"link {link_index}"


def call_netfilter(ipr: IPRoute, index: int) -> None:
    """Pass the bridge's own traffic (container to container on it) through the
    ``inet`` forward hook (br_netfilter), where netplug's policies judge it:
    netplug's bridges only, never the root namespace's or another program's."""
    ipr.link("set", index=index, kind="bridge", br_nf_call_iptables=1, br_nf_call_ip6tables=1)


def _known(ipr: IPRoute, name: str, seen: Seen) -> Link | None:
    """The bridge as last seen with its MTU now, if it still has that index (cheap
    ioctls), else as the kernel reports it: a decoded link message costs about a
    millisecond. A bridge replaced under another index is forgotten, and with
    it the addresses put on the old one."""
    last = seen.link(name)
    if last is not None:
        if index(name) == last.index:
            return dataclasses.replace(last, mtu=link_mtu(name) or last.mtu)
        seen.forget_link(name)
    return find(ipr, name)


def _create(ipr: IPRoute, name: str, mtu: int) -> Link:
    try:
        # Fix the MAC at creation: otherwise the bridge takes the smallest port
        # MAC, which moves as veths come and go and breaks neighbours' caches.
        ipr.link("add", ifname=name, kind="bridge", address=random_mac(), mtu=mtu, state="up")
    except NetlinkError as e:
        if e.code != EEXIST:
            raise
    link = find(ipr, name)
    if link is None:
        raise NetError(f"bridge {name} vanished while being set up; retry")
    return link


def learn_container(rt: Rtnl, bridge_index: int, ips: Iterable[str], mac: str) -> None:
    """Point the bridge's neighbour entries for ``ips`` at ``mac``, the container's,
    as permanent entries (Calico's Felix does the same per workload).

    Replaced, not added: a host whose blocks are full hands an address out again
    as soon as a container goes, and a learnt entry would still map it to the
    old container's MAC for 15-45 s. Permanent: the kernel's neighbour tables
    are shared by every namespace of the machine and hold ``gc_thresh3``
    (1024) entries that garbage collection may drop; permanent entries are not
    counted there, so a host full of containers does not fill the table for
    everyone (ENOBUFS on new entries). DEL deletes them (``forget_container``).
    """
    for ip in ips:
        try:
            rt.replace_neighbour(bridge_index, ip, mac)
        except NetlinkError as e:
            # Kernels before 5.0 count permanent entries too: with the table full,
            # the entry only speeds up a reused address, so ADD goes on.
            if e.code != ENOBUFS:
                raise


def forget_container(rt: Rtnl, bridge_index: int, ips: Iterable[str]) -> None:
    """Delete the bridge's neighbour entries for ``ips`` (a container's, as
    ``learn_container`` made them); one that is gone already is no error."""
    for ip in ips:
        try:
            rt.delete_neighbour(bridge_index, ip)
        except NetlinkError as e:
            if e.code != ENOENT:
                raise
