"""The name registry: store records in, one immutable ``Snapshot`` out (pure).

Sources, by store key (see ``netplug.ipam.schema``):

- attachments written by the CNI plugin: each name of the record answers as
  ``NAME.NETWORK`` with the attachment's addresses;
- blocks written by IPAM: the address ranges whose reverse names are ours
  (a PTR query for an unknown address inside them is NXDOMAIN, not forwarded);
- API registrations: ``NAME`` with addresses, SRV services and a TTL.

Every owner name in a snapshot is relative to the DNS domain and lower-case,
so the same snapshot serves any domain. A name held by several sources (two
containers called ``web`` in ``blue``, a container and an API name) answers
with the union of their addresses. ``Snapshot.apply`` is the only way to
change one: it returns a new snapshot and leaves the old one untouched, so a
query keeps the snapshot it started with.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from types import MappingProxyType
from typing import TypeVar

from netplug.dns.records import Registration, decode_registration
from netplug.ipam.schema import Attachments, Blocks, Names
from netplug.ipam.store.base import Event, KeyValue
from netplug.names import is_dns_label

log = logging.getLogger(__name__)

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# What the registry follows, in one read: everything else in the store is ignored.
FOLLOWED = (Attachments.PREFIX, Blocks.PREFIX, Names.PREFIX)


@dataclass(frozen=True, slots=True)
class Container:
    """One attachment's names: ``NAME.NETWORK`` for each name."""

    network: str
    host: str
    container_id: str
    ifname: str
    names: tuple[str, ...]
    addresses: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class Block:
    network: str
    block: Network


Source = Container | Block | Registration


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str  # relative owner name of the addresses


@dataclass(frozen=True, slots=True)
class Node:
    """What one owner name holds."""

    addresses: tuple[Address, ...] = ()
    srv: tuple[SrvRecord, ...] = ()
    ttl: int | None = None  # the shortest registration TTL: caps the answer's TTL
    # Where the name stands among its container's names (0: the container's own,
    # then its aliases in order; an API name is 0): PTR answers go in this order.
    rank: int = 0


def _empty() -> MappingProxyType:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The registry at one store revision. Build with ``build``; change with ``apply``.

    The mappings are read-only views of dicts no one else holds; ``apply`` copies
    them with ``.copy()`` (``dict(view)`` goes key by key, 15 times slower)."""

    revision: int = 0
    sources: MappingProxyType[str, Source] = field(default_factory=_empty)  # store key -> record
    nodes: MappingProxyType[str, Node] = field(default_factory=_empty)  # relative owner -> records
    # owner names and their ancestors (empty non-terminals) -> how many owners are at or below
    names: MappingProxyType[str, int] = field(default_factory=_empty)
    ptr: MappingProxyType[Address, tuple[str, ...]] = field(
        default_factory=_empty
    )  # address -> relative names, sorted
    blocks: tuple[Network, ...] = ()
    # Kept so that ``apply`` derives again only what the changed sources touch:
    holders: MappingProxyType[str, tuple[str, ...]] = field(
        default_factory=_empty, repr=False
    )  # owner -> keys of the sources that give it records, sorted
    block_keys: tuple[str, ...] = field(default=(), repr=False)  # keys of Block sources, sorted

    @classmethod
    def build(cls, kvs: Iterable[KeyValue], revision: int) -> Snapshot:
        """The snapshot of ``kvs`` (any keys; those outside ``FOLLOWED`` are ignored)."""
        sources = {}
        for kv in kvs:
            source = parse_source(kv.key, kv.value)
            if source is not None:
                sources[kv.key] = source
        return _indexed(cls(), revision, sources, sources)

    def apply(self, events: Iterable[Event]) -> Snapshot:
        """A new snapshot with ``events`` applied; ``self`` when none of them concerns DNS.
        It costs what the changed sources touch plus a C-speed copy of each table,
        not a pass over every name."""
        sources = None
        touched: set[str] = set()
        revision = self.revision
        for event in events:
            key = event.kv.key
            if not key.startswith(FOLLOWED):
                continue
            revision = max(revision, event.kv.mod_revision)
            source = parse_source(key, event.kv.value) if event.type == "put" else None
            if sources is None:
                sources = self.sources.copy()
            if source is None:
                sources.pop(key, None)
            else:
                sources[key] = source
            touched.add(key)
        if sources is None:
            return self
        # A refreshed record that says the same changes nothing.
        changed = [k for k in touched if sources.get(k) != self.sources.get(k)]
        return _indexed(self, revision, sources, changed)

    @property
    def size(self) -> int:
        """How many names answer with addresses."""
        return sum(1 for node in self.nodes.values() if node.addresses)


def parse_source(key: str, value: bytes) -> Source | None:
    """The source stored under ``key``, or None for a key the registry does not
    use or a record it cannot read (logged)."""
    try:
        if key.startswith(Attachments.PREFIX):
            return _container(key, value)
        if key.startswith(Blocks.PREFIX):
            return Block(*Blocks.parse(key))
        if key.startswith(Names.PREFIX):
            return decode_registration(Names.parse(key), value)
    except ValueError as e:  # the schema's SchemaError and InvalidRegistration
        log.warning("registry: ignoring unreadable record %s: %s", key, e)
    return None


def _container(key: str, value: bytes) -> Container | None:
    network, host, *_ = Attachments.parse(key)
    att = Attachments.decode(value, network, host)
    names = tuple(n.lower() for n in att.names if isinstance(n, str) and is_dns_label(n))
    if not names:
        return None
    return Container(
        network,
        host,
        att.container_id,
        att.ifname,
        names,
        tuple(a.address.ip for a in att.allocations),
    )


# How a table of sorted tuples changes: item -> {member: whether it is there now}.
# ``_merged`` makes an item's moves.
K = TypeVar("K")
Moves = dict[K, dict[str, bool]]


def _indexed(
    base: Snapshot, revision: int, sources: dict[str, Source], changed: Collection[str]
) -> Snapshot:
    """``base`` brought to ``sources``, which differ from ``base.sources`` only at
    the ``changed`` keys: just the owners, addresses and blocks those touch are
    derived again. From an empty ``base`` with every key changed, a full build."""
    holders, nodes, names = base.holders.copy(), base.nodes.copy(), base.names.copy()
    owned: Moves[Address] = {}  # address -> {owner: holds it now}
    for owner, moves in _holder_moves(base.sources, sources, changed).items():
        before = nodes.pop(owner, None)
        held = _merged(holders.pop(owner, ()), moves)
        after = _node(owner, [sources[k] for k in held]) if held else None
        if after is not None:
            holders[owner], nodes[owner] = held, after
        _count(names, owner, (after is not None) - (before is not None))
        _address_moves(owned, owner, before, after)
    ptr = base.ptr.copy()
    for address, moves in owned.items():
        owners = _merged(ptr.pop(address, ()), moves)
        if owners:
            ptr[address] = owners
    block_keys, blocks = _blocks(base, sources, changed)
    return Snapshot(
        revision,
        MappingProxyType(sources),
        MappingProxyType(nodes),
        MappingProxyType(names),
        MappingProxyType(ptr),
        blocks,
        MappingProxyType(holders),
        block_keys,
    )


def _blocks(
    base: Snapshot, sources: Mapping[str, Source], changed: Collection[str]
) -> tuple[tuple[str, ...], tuple[Network, ...]]:
    """The Block sources' keys, and their networks in key order without repeats."""
    moves = {k: isinstance(sources.get(k), Block) for k in changed if k.startswith(Blocks.PREFIX)}
    if not moves:
        return base.block_keys, base.blocks
    block_keys = _merged(base.block_keys, moves)
    found = (sources[k] for k in block_keys)
    return block_keys, tuple(dict.fromkeys(s.block for s in found if isinstance(s, Block)))


def _records(source: Source | None) -> Iterator[tuple[str, Node]]:
    """(owner, what ``source`` gives it) for each owner name ``source`` gives records to."""
    if isinstance(source, Container):
        network = source.network.lower()
        for rank, name in enumerate(source.names):
            yield f"{name}.{network}", Node(source.addresses, rank=rank)
    elif isinstance(source, Registration):
        yield source.name, Node(source.addresses, (), source.ttl)
        for s in source.srv:
            record = SrvRecord(s.priority, s.weight, s.port, source.name)
            yield f"{s.service}.{source.name}", Node((), (record,), source.ttl)


def _node(owner: str, sources: Iterable[Source]) -> Node:
    """What ``owner`` holds from ``sources`` (in key order, so answers are stable):
    their addresses and SRV records in that order without repeats, the shortest
    TTL, the best rank."""
    parts = [part for source in sources for name, part in _records(source) if name == owner]
    ttls = [p.ttl for p in parts if p.ttl is not None]
    return Node(
        tuple(dict.fromkeys(a for p in parts for a in p.addresses)),
        tuple(dict.fromkeys(s for p in parts for s in p.srv)),
        min(ttls, default=None),
        min((p.rank for p in parts), default=0),
    )


def _holder_moves(
    old: Mapping[str, Source], new: Mapping[str, Source], changed: Collection[str]
) -> Moves[str]:
    """owner -> {key: whether its source gives the owner records now}."""
    moves: Moves[str] = {}
    for key in changed:
        for owner, _ in _records(old.get(key)):
            moves.setdefault(owner, {})[key] = False
        for owner, _ in _records(new.get(key)):  # after: a replaced source that still holds it
            moves.setdefault(owner, {})[key] = True
    return moves


def _address_moves(
    owned: Moves[Address], owner: str, before: Node | None, after: Node | None
) -> None:
    """Note in ``owned`` the addresses ``owner`` gained or lost."""
    was = set(before.addresses if before is not None else ())
    now = set(after.addresses if after is not None else ())
    for address in was - now:
        owned.setdefault(address, {})[owner] = False
    for address in now - was:
        owned.setdefault(address, {})[owner] = True


def _merged(members: tuple[str, ...], moves: Mapping[str, bool]) -> tuple[str, ...]:
    """``members`` with the moves made, sorted."""
    kept = set(members)
    for member, there in moves.items():
        if there:
            kept.add(member)
        else:
            kept.discard(member)
    return tuple(sorted(kept))


def _count(names: dict[str, int], owner: str, step: int) -> None:
    """Add ``step`` to the count of ``owner`` and of each of its ancestors; a
    name whose count falls to 0 is no longer in the zone."""
    if step == 0:
        return
    labels = owner.split(".")
    for i in range(len(labels)):
        name = ".".join(labels[i:])
        count = names.get(name, 0) + step
        if count:
            names[name] = count
        else:
            del names[name]


def listing(snap: Snapshot, domain: str) -> list[dict]:
    """Every registered name as the API lists it, sorted by name then source."""
    rows = []
    for source in snap.sources.values():
        if isinstance(source, Container):
            for name in source.names:
                rows.append(
                    {
                        "name": f"{name}.{source.network.lower()}.{domain}",
                        "source": "container",
                        "addresses": [str(a) for a in source.addresses],
                        "network": source.network,
                        "host": source.host,
                        "containerID": source.container_id,
                        "ifname": source.ifname,
                    }
                )
        elif isinstance(source, Registration):
            rows.append({"name": f"{source.name}.{domain}", "source": "api", **source.record()})
    return sorted(rows, key=lambda r: (r["name"], r["source"], r.get("containerID", "")))
