"""The host bridge that a network's containers and its VXLAN device share."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netplug.net import NetError
from netplug.net.addresses import Interface, ensure_addresses
from netplug.net.links import EEXIST, Link, find, index, random_mac
from netplug.net.links import mtu as link_mtu


def ensure_bridge(
    ipr: IPRoute,
    name: str,
    mtu: int,
    gateways: Iterable[Interface],
    known: set[tuple[int, object]],
    known_links: dict[str, Link],
) -> Link:
    """The bridge ``name``, up, with MTU ``mtu`` and every gateway address on it.

    The MTU is checked on every call: the kernel puts a bridge whose MTU nobody
    set back to 1500 when its last port leaves. Gateways in ``known`` (see
    ``addresses.ensure_addresses``) are taken as present, and a bridge in
    ``known_links`` with an unchanged index as it was, but for its MTU.
    Idempotent and safe against a concurrent creator (EEXIST is success).
    Raises NetError when ``name`` exists and is not a bridge.
    """
    link = _known(ipr, name, known_links)
    if link is None:
        link = _create(ipr, name, mtu)
    if link.kind != "bridge":
        raise NetError(
            f"interface {name} exists and is a {link.kind or 'device'}, not a bridge: "
            f'set "bridge" in the network config to another name'
        )
    if link.mtu != mtu or not link.up:
        # An MTU set here (not at creation) also stops the kernel from resetting it.
        ipr.link("set", index=link.index, mtu=mtu, state="up")
        link = find(ipr, name) or link
    known_links[name] = link
    ensure_addresses(ipr, link.index, gateways, known)
    return link


def _known(ipr: IPRoute, name: str, known_links: dict[str, Link]) -> Link | None:
    """The bridge as last seen with its MTU now, if it still has that index (cheap
    ioctls), else as the kernel reports it: a decoded link message costs about a
    millisecond."""
    seen = known_links.get(name)
    if seen is not None and index(name) == seen.index:
        return dataclasses.replace(seen, mtu=link_mtu(name) or seen.mtu)
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
