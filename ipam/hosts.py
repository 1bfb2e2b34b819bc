"""Hosts as the store knows them, and removing a dead one."""

from __future__ import annotations

from dataclasses import dataclass

from netplug.ipam import inventory
from netplug.ipam.schema import Attachments, Blocks, HostRecord, Hosts, Ips, Vteps
from netplug.ipam.store.base import Delete, Store


@dataclass(frozen=True, slots=True)
class HostInfo:
    name: str
    vtep: str
    live: bool  # its agent's lease is alive
    since: int  # when its agent registered (epoch seconds), 0 if unknown
    blocks: tuple[str, ...]  # "network:block"
    allocations: int


def hosts(store: Store) -> list[HostInfo]:
    """Every host with a record, a block or a VTEP, live or not."""
    records = {
        Hosts.parse(kv.key): Hosts.decode(kv.value)
        for kv in store.range(Hosts.PREFIX, prefix=True).kvs
    }
    vteps = {}
    for kv in store.range(Vteps.PREFIX, prefix=True).kvs:
        vteps.setdefault(Vteps.parse(kv.key).host, Vteps.decode(kv.value).vtep)
    blocks = inventory.blocks(store)
    names = sorted(set(records) | set(vteps) | {b.host for b in blocks})
    none = HostRecord()
    return [
        HostInfo(
            name,
            records.get(name, none).vtep or vteps.get(name, ""),
            name in records,
            records.get(name, none).since,
            tuple(f"{b.network}:{b.block}" for b in blocks if b.host == name),
            sum(b.used for b in blocks if b.host == name),
        )
        for name in names
    ]


def remove_host(store: Store, host: str) -> int:
    """Release everything ``host`` holds: its record, VTEPs, blocks with their
    addresses, attachments and so their DNS names. Returns how many keys went."""
    deletes: list[Delete] = [Delete(Hosts.key(host))]
    networks = set()
    for block in inventory.blocks(store):
        if block.host == host:
            networks.add(block.network)
            deletes.append(Delete(Blocks.key(block.network, block.block)))
            deletes.append(Delete(Ips.block_prefix(block.network, block.block), prefix=True))
    for kv in store.range(Vteps.PREFIX, prefix=True).kvs:
        network, owner = Vteps.parse(kv.key)
        if owner == host:
            networks.add(network)
            deletes.append(Delete(kv.key))
    for attachment in inventory.attachments(store, host):
        networks.add(attachment.network)
    deletes += [Delete(Attachments.host_prefix(n, host), prefix=True) for n in networks]
    done = store.txn([], deletes)
    return sum(n for n in done.responses if isinstance(n, int))
