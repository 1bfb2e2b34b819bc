"""Which VXLAN peers a host should have: a pure function of the store's records.

For every other live host that has a VTEP in the network: one FDB entry (its
VXLAN MAC -> its VTEP address), and per block it holds a permanent neighbour
entry (the block's network address -> its MAC) and an onlink route to the
block via that address. Flannel's vxlan backend programs the same three.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from netplug.net.peers import PeerState


@dataclass(frozen=True, slots=True)
class Vtep:
    network: str
    host: str
    address: str  # the host's underlay (VTEP) address
    mac: str  # its VXLAN device's MAC
    vni: int


def desired(
    me: str,
    live_hosts: set[str],
    vteps: list[Vtep],
    blocks: dict[IPv4Network | IPv6Network, str],
) -> PeerState:
    """The peers ``me`` should program for one network (``vteps`` and ``blocks`` of it)."""
    routes, neighbours, fdb = set(), set(), set()
    peers = {v.host: v for v in vteps if v.host != me and v.host in live_hosts}
    for block, owner in blocks.items():
        peer = peers.get(owner)
        if peer is None:
            continue
        gateway = str(block.network_address)
        routes.add((str(block), gateway))
        neighbours.add((gateway, peer.mac))
    fdb = {(peer.mac, peer.address) for peer in peers.values()}
    return PeerState(frozenset(routes), frozenset(neighbours), frozenset(fdb))


def diff(have: PeerState, want: PeerState) -> tuple[PeerState, PeerState]:
    """(what to add, what to remove) to turn ``have`` into ``want``."""
    add = PeerState(
        want.routes - have.routes, want.neighbours - have.neighbours, want.fdb - have.fdb
    )
    remove = PeerState(
        have.routes - want.routes, have.neighbours - want.neighbours, have.fdb - want.fdb
    )
    return add, remove
