"""The host bridge that a network's containers and its VXLAN device share."""

from __future__ import annotations

import os
from collections.abc import Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netplug.net import NetError
from netplug.net.addresses import Interface, add_address
from netplug.net.links import EEXIST, Link, find


def _random_mac() -> str:
    # Locally administered, unicast.
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def ensure_bridge(ipr: IPRoute, name: str, mtu: int, gateways: Iterable[Interface]) -> Link:
    """The bridge ``name``, up, with ``mtu`` and every gateway address on it.

    Idempotent and safe against a concurrent creator (EEXIST is success).
    Raises NetError when ``name`` exists and is not a bridge.
    """
    try:
        # Fix the MAC at creation: otherwise the bridge takes the smallest port
        # MAC, which moves as veths come and go and breaks neighbours' caches.
        ipr.link("add", ifname=name, kind="bridge", address=_random_mac(), mtu=mtu)
    except NetlinkError as e:
        if e.code != EEXIST:
            raise
    link = find(ipr, name)
    if link is None:
        raise NetError(f"bridge {name} vanished while being set up; retry")
    if link.kind != "bridge":
        raise NetError(
            f"interface {name} exists and is a {link.kind or 'device'}, not a bridge: "
            f'set "bridge" in the network config to another name'
        )
    if link.mtu != mtu or not link.up:
        ipr.link("set", index=link.index, mtu=mtu, state="up")
    for gateway in gateways:
        add_address(ipr, link.index, gateway)
    return find(ipr, name) or link
