"""Each network's record: its subnets, VNI and DNS domain, checked for conflicts.

Two networks on overlapping subnets would lease the same blocks and put the
same gateway on two bridges of one host; two networks on one VNI would share
a VXLAN device. The first ADD of a network records it; an ADD whose network
conflicts with another's is refused, naming both (CNI code 7). The record
also tells the agents each network's DNS domain.

A config may leave the VNI out: the network's first ADD, on whichever host,
then picks the lowest VNI no other network holds and records it, and every
later ADD everywhere reads it back. The record is written by compare-and-swap
against the registry key, so two networks recorded at once cannot pick the
same VNI, and two first ADDs of one network agree on the one that won.
"""

from __future__ import annotations

from dataclasses import replace

from netplug.ipam.allocations import MAX_ATTEMPTS, Contention, IPAMError, settled_cas
from netplug.ipam.schema import NetworkRecord, NetworkRegistry, Networks
from netplug.ipam.store.base import Compare, Put, Store

# The first VNI handed out: the config's default before VNIs were assigned, so a
# lone network keeps the VXLAN device (npvx4242) it always had.
FIRST_ASSIGNED_VNI = 4242
MAX_VNI = 2**24 - 1


class NetworkConflict(IPAMError):
    code = 7


def disagreement(name: str, recorded: NetworkRecord, wanted: NetworkRecord) -> str:
    """Why ``wanted`` cannot replace the network's ``recorded`` layout (pure); empty
    when it can. Hosts that cut one network into blocks of different sizes, or
    put it on another subnet, VNI or VXLAN port, would hand out overlapping
    addresses or never reach each other, and hosts that disagree on ``isolate``
    would each enforce a different segment; the DNS domain alone may change."""
    fields = [
        ("subnet", "subnet"),
        ("subnet6", "subnet6"),
        ("vni", "vxlan.vni"),
        ("port", "vxlan.port"),
        ("isolate", "isolate"),
    ]
    if recorded.block_prefix:
        fields += [("block_prefix", "hostBlockPrefix"), ("block_prefix6", "hostBlockPrefix6")]
    differs = [
        f"{option} {_shown(getattr(recorded, field))} (this config: "
        f"{_shown(getattr(wanted, field))})"
        for field, option in fields
        if getattr(recorded, field) != getattr(wanted, field)
    ]
    if not differs:
        return ""
    return (
        f"network {name} is recorded with " + ", ".join(differs) + ": give every host the "
        "same subnet, subnet6, hostBlockPrefix, vxlan.vni, vxlan.port and isolate for a "
        "network, or use a new name"
    )


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()  # as JSON writes it
    return "unset" if value is None else str(value or "none")


def networks(store: Store) -> dict[str, NetworkRecord]:
    return {
        Networks.parse(kv.key): Networks.decode(kv.value)
        for kv in store.range(Networks.PREFIX, prefix=True).kvs
    }


def conflicts(name: str, record: NetworkRecord, others: dict[str, NetworkRecord]) -> list[str]:
    """Why ``record`` cannot stand beside ``others`` (pure); empty when it can."""
    found = []
    for other_name, other in sorted(others.items()):
        if other_name == name:
            continue
        for mine in record.subnets():
            for theirs in other.subnets():
                if mine.version == theirs.version and mine.overlaps(theirs):
                    found.append(
                        f"subnet {mine} overlaps {theirs} of network {other_name}: "
                        "give each network a subnet of its own"
                    )
        if record.vni and record.vni == other.vni:
            found.append(
                f"vxlan.vni {record.vni} is network {other_name}'s: set another vxlan.vni, "
                "or leave it out to have a free one assigned"
            )
    return found


def free_vni(others: dict[str, NetworkRecord]) -> int:
    """The lowest VNI from FIRST_ASSIGNED_VNI that no network in ``others`` holds (pure);
    raises NetworkConflict when none is left."""
    taken = {other.vni for other in others.values()}
    vni = FIRST_ASSIGNED_VNI
    while vni in taken:
        vni += 1
    if vni > MAX_VNI:
        raise NetworkConflict(f"no free VNI from {FIRST_ASSIGNED_VNI} to {MAX_VNI}: set vxlan.vni")
    return vni


def ensure_network(store: Store, name: str, record: NetworkRecord) -> NetworkRecord:
    """Record ``name`` as ``record`` unless it already is, and return the record as
    stored: with a VNI assigned when ``record.vni`` is None. Raises NetworkConflict.

    One read when nothing changed, which is every ADD after a network's first.
    A write also bumps the registry key, and compares it unchanged since before
    the other records were read: two networks recorded at once cannot both
    miss each other's overlap, nor take the same free VNI.
    """
    key, registry_key = Networks.key(name), NetworkRegistry.key()
    for _ in range(MAX_ATTEMPTS):
        wanted = record
        current = store.get(key)
        if current is not None:
            recorded = Networks.decode(current.value)
            if record.vni is None and recorded.vni:  # the VNI assigned at its first ADD
                wanted = replace(record, vni=recorded.vni)
            if problem := disagreement(name, recorded, wanted):
                raise NetworkConflict(problem)
            if recorded == wanted:
                return recorded
        registry = store.get(registry_key)
        others = networks(store)
        if wanted.vni is None:
            wanted = replace(wanted, vni=free_vni(others))
        problems = conflicts(name, wanted, others)
        if problems:
            raise NetworkConflict(f"network {name}: " + "; ".join(problems))
        compares = [
            Compare.absent(key) if current is None else Compare.unchanged(current),
            Compare.absent(registry_key) if registry is None else Compare.unchanged(registry),
        ]
        puts = [
            Put(key, Networks.encode(wanted)),
            Put(registry_key, NetworkRegistry.encode(name)),
        ]
        if settled_cas(store, compares, puts):
            return wanted
    raise Contention(f"could not record network {name} after {MAX_ATTEMPTS} attempts")
