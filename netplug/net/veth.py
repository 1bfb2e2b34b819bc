"""The veth pair that joins a container to the host bridge."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Address

from pyroute2.netlink.exceptions import NetlinkError

from netplug import faults
from netplug.net import NetError, links, netns
from netplug.net.links import EEXIST, Link, random_mac
from netplug.net.rtnl import Rtnl, VethRequest

HOST_VETH_PREFIX = "np"


def host_veth_name(container_id: str, ifname: str) -> str:
    """The host side's name, derived from the attachment so that DEL and GC can
    find it without any saved state (15 characters, the kernel's limit)."""
    digest = hashlib.sha1(f"{container_id}/{ifname}".encode()).hexdigest()
    return HOST_VETH_PREFIX + digest[:13]


def is_host_veth_name(name: str) -> bool:
    return len(name) == 15 and name.startswith(HOST_VETH_PREFIX)


@dataclass(frozen=True, slots=True)
class VethPair:
    host: Link
    container: Link


def container_mac(address: IPv4Address) -> str:
    """The container end's MAC, from its IPv4 address (OVN-Kubernetes' rule: 0a:58,
    then the address's four bytes; unique on a bridge, as the address is). A
    container restarted on its address (DEL, then ADD: podman restart) keeps its
    MAC, so the neighbour caches of the containers that reach it over the bridge
    stay right: with a new random MAC it was unreachable from them for 15-45 s,
    until their entries went stale."""
    return ":".join(f"{b:02x}" for b in (0x0A, 0x58, *address.packed))


@dataclass(frozen=True, slots=True)
class PairSpec:
    """The pair ADD makes: host end ``host_name`` on the bridge ``bridge_index``,
    container end ``ifname`` with MAC ``mac``, both with ``mtu``."""

    host_name: str
    ifname: str
    mtu: int
    bridge_index: int
    mac: str


def create_pair(rt: Rtnl, crt: Rtnl, netns_fd: int, spec: PairSpec) -> VethPair:
    """Create the pair with its peer born inside the container as ``spec.ifname``, up.

    ``rt`` and ``crt`` are channels in the host's and the container's
    namespace (open as ``netns_fd``). The host end is created up and on the bridge, both ends with
    the MTU and their MACs (the host end's random), so that one request does most of the work.
    A stale host end of the same attachment (an ADD never DELeted) is
    replaced: its name is derived from this very attachment.
    """
    host_name, ifname, mtu, bridge_index = spec.host_name, spec.ifname, spec.mtu, spec.bridge_index
    host_mac, peer_mac = random_mac(), spec.mac
    request = VethRequest(host_name, mtu, host_mac, bridge_index, ifname, netns_fd, peer_mac)
    try:
        rt.add_veth(request)
    except NetlinkError as e:
        if e.code != EEXIST:
            raise
        links.delete(rt, host_name)
        rt.add_veth(request)
    faults.check("create_pair.linked", NetError)
    peer_index = netns.link_index(netns_fd, ifname)
    if peer_index is None:
        raise NetError(f"interface {ifname} vanished from the container while being set up; retry")
    crt.set_up(peer_index)
    host = Link(0, host_name, "veth", host_mac, mtu, bridge_index, True)
    return VethPair(host=host, container=Link(peer_index, ifname, "veth", peer_mac, mtu, 0, True))
