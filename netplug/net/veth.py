"""The veth pair that joins a container to the host bridge."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from pyroute2 import IPRoute

from netplug.net import NetError, netns
from netplug.net.links import Link, find

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
    namespace. Both ends come up with ``mtu``; the host end joins the bridge.
    A stale host end of the same attachment (an ADD never DELeted) is
    replaced: its name is derived from this very attachment.
    """
    if find(ipr, host_name) is not None:
        ipr.link("del", ifname=host_name)
    fd = netns.open_netns(netns_path)
    try:
        ipr.link(
            "add",
            ifname=host_name,
            kind="veth",
            mtu=mtu,
            peer={"ifname": ifname, "net_ns_fd": fd, "mtu": mtu},
        )
    finally:
        os.close(fd)
    host = _must_find(ipr, host_name)
    ipr.link("set", index=host.index, master=bridge_index, state="up")
    peer = _must_find(cipr, ifname)
    cipr.link("set", index=peer.index, state="up")
    return VethPair(host=_must_find(ipr, host_name), container=_must_find(cipr, ifname))


def _must_find(ipr: IPRoute, name: str) -> Link:
    link = find(ipr, name)
    if link is None:
        raise NetError(f"interface {name} vanished while being set up; retry")
    return link
