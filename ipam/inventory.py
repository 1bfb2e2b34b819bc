"""Reading the whole address space back out of the store, for operators.

Everything here is read-only and cluster-wide (all networks, all hosts);
``allocations.IPAM`` is the per-host writer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from netplug.ipam.blocks import FIRST_USABLE, Network, last_usable
from netplug.ipam.schema import Attachment, Attachments, Blocks, Ips
from netplug.ipam.store.base import Store


@dataclass(frozen=True, slots=True)
class BlockUse:
    network: str
    block: Network
    host: str
    used: int
    capacity: int


def blocks(store: Store) -> list[BlockUse]:
    """Every leased block with its host and how many of its addresses are taken."""
    used: Counter[tuple[str, Network]] = Counter()
    for kv in store.range(Ips.PREFIX, prefix=True).kvs:
        network, block, _ = Ips.parse(kv.key)
        used[network, block] += 1
    found = []
    for kv in store.range(Blocks.PREFIX, prefix=True).kvs:
        network, block = Blocks.parse(kv.key)
        capacity = last_usable(block) - FIRST_USABLE + 1
        found.append(
            BlockUse(network, block, Blocks.decode(kv.value), used[network, block], capacity)
        )
    return found


def attachments(store: Store, host: str | None = None) -> list[Attachment]:
    """Every attachment (of ``host`` only, when given), in key order."""
    found = []
    for kv in store.range(Attachments.PREFIX, prefix=True).kvs:
        network, owner, *_ = Attachments.parse(kv.key)
        if host is None or owner == host:
            found.append(Attachments.decode(kv.value, network, owner))
    return found
