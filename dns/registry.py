"""The name registry: store records in, one immutable ``Snapshot`` out (pure).

Sources, by store key (see ``keys``):

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from types import MappingProxyType

from netplug.cni.request import is_dns_label
from netplug.dns import keys
from netplug.dns.records import InvalidRegistration, Registration, decode_registration
from netplug.ipam.allocations import Attachment
from netplug.ipam.keys import decode
from netplug.ipam.store.base import Event, KeyValue

log = logging.getLogger(__name__)

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


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


def _empty() -> Mapping:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The registry at one store revision. Build with ``build``; change with ``apply``."""

    revision: int = 0
    sources: Mapping[str, Source] = field(default_factory=_empty)  # store key -> parsed record
    nodes: Mapping[str, Node] = field(default_factory=_empty)  # relative owner name -> records
    names: frozenset[str] = frozenset()  # owner names and their ancestors (empty non-terminals)
    ptr: Mapping[Address, tuple[str, ...]] = field(
        default_factory=_empty
    )  # address -> relative names
    blocks: tuple[Network, ...] = ()

    @classmethod
    def build(cls, kvs: Iterable[KeyValue], revision: int) -> Snapshot:
        """The snapshot of ``kvs`` (any keys; those outside ``keys.PREFIXES`` are ignored)."""
        sources = {}
        for kv in kvs:
            source = parse_source(kv.key, kv.value)
            if source is not None:
                sources[kv.key] = source
        return _indexed(revision, sources)

    def apply(self, events: Iterable[Event]) -> Snapshot:
        """A new snapshot with ``events`` applied; ``self`` when none of them concerns DNS."""
        sources = None
        revision = self.revision
        for event in events:
            key = event.kv.key
            if not key.startswith(keys.PREFIXES):
                continue
            revision = max(revision, event.kv.mod_revision)
            source = parse_source(key, event.kv.value) if event.type == "put" else None
            if sources is None:
                sources = dict(self.sources)
            if source is None:
                sources.pop(key, None)
            else:
                sources[key] = source
        return self if sources is None else _indexed(revision, sources)

    @property
    def size(self) -> int:
        """How many names answer with addresses."""
        return sum(1 for node in self.nodes.values() if node.addresses)


def parse_source(key: str, value: bytes) -> Source | None:
    """The source stored under ``key``, or None for a key the registry does not
    use or a record it cannot read (logged)."""
    try:
        if key.startswith(keys.ATTACHMENTS):
            return _container(key[len(keys.ATTACHMENTS) :], value)
        if key.startswith(keys.BLOCKS):
            network, _, cidr = key[len(keys.BLOCKS) :].partition("/")
            return Block(network, ip_network(cidr))
        if key.startswith(keys.NAMES):
            return decode_registration(key[len(keys.NAMES) :], value)
    except (ValueError, KeyError, TypeError, InvalidRegistration) as e:
        log.warning("registry: ignoring unreadable record %s: %s", key, e)
    return None


def _container(rest: str, value: bytes) -> Container | None:
    network, host, *_ = rest.split("/")
    record = decode(value)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    att = Attachment.from_record(network, host, record)
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


def _indexed(revision: int, sources: dict[str, Source]) -> Snapshot:
    """Derive the lookup tables from ``sources`` (in key order, so answers are stable)."""
    addresses: dict[str, dict[Address, None]] = {}
    srv: dict[str, dict[SrvRecord, None]] = {}
    ttls: dict[str, int] = {}
    blocks = []
    for key in sorted(sources):
        source = sources[key]
        if isinstance(source, Block):
            blocks.append(source.block)
            continue
        if isinstance(source, Container):
            network = source.network.lower()
            owners = [f"{name}.{network}" for name in source.names]
            ttl = None
        else:
            owners = [source.name]
            ttl = source.ttl
            for s in source.srv:
                owner = f"{s.service}.{source.name}"
                record = SrvRecord(s.priority, s.weight, s.port, source.name)
                srv.setdefault(owner, {})[record] = None
                _cap(ttls, owner, ttl)
        for owner in owners:
            addresses.setdefault(owner, {}).update(dict.fromkeys(source.addresses))
            _cap(ttls, owner, ttl)
    nodes = {
        owner: Node(tuple(addresses.get(owner, ())), tuple(srv.get(owner, ())), ttls.get(owner))
        for owner in addresses.keys() | srv.keys()
    }
    ptr: dict[Address, list[str]] = {}
    for owner in sorted(addresses):
        for address in addresses[owner]:
            ptr.setdefault(address, []).append(owner)
    return Snapshot(
        revision,
        MappingProxyType(sources),
        MappingProxyType(nodes),
        frozenset(_with_ancestors(nodes)),
        MappingProxyType({a: tuple(owners) for a, owners in ptr.items()}),
        tuple(dict.fromkeys(blocks)),
    )


def _cap(ttls: dict[str, int], owner: str, ttl: int | None) -> None:
    if ttl is not None:
        ttls[owner] = min(ttl, ttls.get(owner, ttl))


def _with_ancestors(owners: Iterable[str]) -> set[str]:
    found = set()
    for owner in owners:
        labels = owner.split(".")
        found.update(".".join(labels[i:]) for i in range(len(labels)))
    return found


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
