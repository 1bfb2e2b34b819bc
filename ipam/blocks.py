"""Cutting the cluster subnet into per-host blocks (pure).

A block is named by its index inside the subnet: block ``i`` of 10.244.0.0/16
with /24 blocks is 10.244.i.0/24. A host's first block is searched from a
position hashed from its name, so hosts that join at once try different
blocks instead of all fighting over the lowest free one.
"""

from __future__ import annotations

import zlib
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address


def block_count(subnet: Network, block_prefix: int) -> int:
    return 1 << (block_prefix - subnet.prefixlen)


def block_at(subnet: Network, block_prefix: int, index: int) -> Network:
    size = 1 << (subnet.max_prefixlen - block_prefix)
    base = int(subnet.network_address) + index * size
    return ip_network((base, block_prefix))


def block_of(subnet: Network, block_prefix: int, address: Address) -> Network | None:
    """The block that holds ``address``, or None outside the subnet."""
    if address not in subnet:
        return None
    return ip_network((address, block_prefix), strict=False)


def spread_start(key: str, modulo: int) -> int:
    """A stable pseudo-random start position for ``key`` (crc32: cheap, stdlib)."""
    return zlib.crc32(key.encode()) % modulo


def choose_free_block(
    subnet: Network, block_prefix: int, taken: set[Network], host_name: str
) -> Network | None:
    """The first block not in ``taken``, searched from the host's hashed start."""
    count = block_count(subnet, block_prefix)
    start = spread_start(host_name, count)
    for step in range(count):
        block = block_at(subnet, block_prefix, (start + step) % count)
        if block not in taken:
            return block
    return None


def gateway(block: Network) -> Address:
    """The block's first address: the bridge's, and the containers' default gateway."""
    return block.network_address + 1


# Container addresses start after the network address and the gateway.
FIRST_USABLE = 2


def last_usable(block: Network) -> int:
    """Offset of the last container address (IPv4 keeps its broadcast address free)."""
    return block.num_addresses - (2 if block.version == 4 else 1)
