"""Choosing a container's address inside a block (pure).

Candidates are probed from a position hashed from the attachment, not from
the lowest free address: parallel ADDs on one host (and contenders on etcd)
then almost never race for the same address, so compare-and-swap rarely
retries. The hash also makes an attachment's address stable across retries.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Set as AbstractSet

from netplug.ipam.blocks import FIRST_USABLE, Address, Network, last_usable, spread_start


def candidates(block: Network, used: AbstractSet[Address], key: str) -> Iterator[Address]:
    """Every free container address of ``block``, starting at ``key``'s hashed slot."""
    low, high = FIRST_USABLE, last_usable(block)
    span = high - low + 1
    if span <= 0:
        return
    start = spread_start(key, span)
    base = block.network_address
    for step in range(span):
        address = base + (low + (start + step) % span)
        if address not in used:
            yield address


def is_usable(block: Network, address: Address) -> bool:
    """A static request may name any container address of the block."""
    offset = int(address) - int(block.network_address)
    return FIRST_USABLE <= offset <= last_usable(block)
