"""Reading the whole address space back out of the store, for operators.

Everything here is read-only and cluster-wide (all networks, all hosts);
``allocations.IPAM`` is the per-host writer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from ipaddress import ip_network

from netplug.ipam import keys
from netplug.ipam.allocations import Attachment
from netplug.ipam.blocks import FIRST_USABLE, Network, last_usable
from netplug.ipam.store.base import Store


@dataclass(frozen=True, slots=True)
class BlockUse:
    network: str
    block: Network
    host: str
    used: int
    capacity: int


def _split(key: str, prefix: str, parts: int) -> list[str]:
    """The first ``parts - 1`` path segments after ``prefix``, then the rest whole."""
    return key[len(prefix) :].split("/", parts - 1)


def blocks(store: Store) -> list[BlockUse]:
    """Every leased block with its host and how many of its addresses are taken."""
    used: Counter[tuple[str, str]] = Counter()
    ips_prefix = f"{keys.ROOT}ips/"
    for kv in store.range(ips_prefix, prefix=True).kvs:
        network, rest = _split(kv.key, ips_prefix, 2)
        used[(network, rest.rsplit("/", 1)[0])] += 1
    found = []
    for kv in store.range(keys.networks_prefix(), prefix=True).kvs:
        network, cidr = _split(kv.key, keys.networks_prefix(), 2)
        block = ip_network(cidr)
        capacity = last_usable(block) - FIRST_USABLE + 1
        found.append(
            BlockUse(network, block, keys.decode(kv.value)["host"], used[(network, cidr)], capacity)
        )
    return found


def attachments(store: Store, host: str | None = None) -> list[Attachment]:
    """Every attachment (of ``host`` only, when given), in key order."""
    prefix = f"{keys.ROOT}attachments/"
    found = []
    for kv in store.range(prefix, prefix=True).kvs:
        network, owner, _ = _split(kv.key, prefix, 3)
        if host is None or owner == host:
            found.append(Attachment.from_record(network, owner, keys.decode(kv.value)))
    return found
