"""Which VXLAN peers a host should have: a pure function of the store's records.

For every other live host that has a VTEP in the network: one FDB entry (its
VXLAN MAC -> its VTEP address), and per block it holds a permanent neighbour
entry (the block's network address -> its MAC) and an onlink route to the
block via that address. Flannel's vxlan backend programs the same three.

After a store reset each host puts its records back when ``netplugctl
recover`` runs there, one host after another: ``unrecorded`` picks the peers
that no record speaks for yet (the hosts not recovered), which the overlay
keeps meanwhile rather than cut those hosts off.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from netplug.ipam.blocks import Network
from netplug.net.peers import PeerState

NOTHING = PeerState()


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
    blocks: dict[Network, str],
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


def unrecorded(have: PeerState, vteps: list[Vtep], blocks: Iterable[Network]) -> PeerState:
    """The entries of ``have`` that no record of the network speaks for: the route
    and neighbour entry of a block no record names, the FDB entry of a MAC and
    address no VTEP has. They never meet ``desired``'s entries, which all come
    from records."""
    macs = {v.mac for v in vteps}
    addresses = {v.address for v in vteps}
    named = {str(b) for b in blocks}
    gateways = {str(b.network_address) for b in blocks}
    return PeerState(
        frozenset(r for r in have.routes if r[0] not in named),
        frozenset(n for n in have.neighbours if n[0] not in gateways),
        frozenset(f for f in have.fdb if f[0] not in macs and f[1] not in addresses),
    )


def diff(
    have: PeerState, want: PeerState, keep: PeerState = NOTHING
) -> tuple[PeerState, PeerState]:
    """(what to add, what to remove) to turn ``have`` into ``want``, removing
    nothing in ``keep``."""
    add = PeerState(
        want.routes - have.routes, want.neighbours - have.neighbours, want.fdb - have.fdb
    )
    remove = PeerState(
        have.routes - want.routes - keep.routes,
        have.neighbours - want.neighbours - keep.neighbours,
        have.fdb - want.fdb - keep.fdb,
    )
    return add, remove
