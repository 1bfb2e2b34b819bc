"""The veth pair that joins a container to the host bridge."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netplug.net import NetError, netns
from netplug.net.links import EEXIST, Link, random_mac

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


def create_pair(
    ipr: IPRoute,
    cipr: IPRoute,
    netns_path: str,
    host_name: str,
    ifname: str,
    mtu: int,
    bridge_index: int,
) -> VethPair:
    """Create the pair with its peer born inside the container as ``ifname``.

    ``ipr`` and ``cipr`` are handles for the host's and the container's
    namespace. The host end is created up and on the bridge, both ends with
    ``mtu`` and MACs chosen here, so that one request does most of the work.
    A stale host end of the same attachment (an ADD never DELeted) is
    replaced: its name is derived from this very attachment.
    """
    host_mac, peer_mac = random_mac(), random_mac()
    fd = netns.open_netns(netns_path)
    try:
        request = {
            "ifname": host_name,
            "kind": "veth",
            "mtu": mtu,
            "address": host_mac,
            "master": bridge_index,
            "state": "up",
            "peer": {"ifname": ifname, "net_ns_fd": fd, "mtu": mtu, "address": peer_mac},
        }
        try:
            ipr.link("add", **request)
        except NetlinkError as e:
            if e.code != EEXIST:
                raise
            ipr.link("del", ifname=host_name)
            ipr.link("add", **request)
    finally:
        os.close(fd)
    peer_index = netns.link_index(netns_path, ifname)
    if peer_index is None:
        raise NetError(f"interface {ifname} vanished from {netns_path} while being set up; retry")
    cipr.link("set", index=peer_index, state="up")
    host = Link(0, host_name, "veth", host_mac, mtu, bridge_index, True)
    return VethPair(host=host, container=Link(peer_index, ifname, "veth", peer_mac, mtu, 0, True))
