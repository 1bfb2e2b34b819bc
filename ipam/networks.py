"""Each network's record: its subnets, VNI and DNS domain, checked for conflicts.

Two networks on overlapping subnets would lease the same blocks and put the
same gateway on two bridges of one host; two networks on one VNI would share
a VXLAN device. The first ADD of a network records it; an ADD whose network
conflicts with another's is refused, naming both (CNI code 7). The record
also tells the agents each network's DNS domain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from ipaddress import ip_network

from netplug.ipam import keys
from netplug.ipam.allocations import MAX_ATTEMPTS, Contention, IPAMError
from netplug.ipam.store.base import Compare, Put, Store


class NetworkConflict(IPAMError):
    code = 7


@dataclass(frozen=True, slots=True)
class NetworkRecord:
    subnet: str
    subnet6: str  # "" without IPv6
    vni: int
    domain: str
    block_prefix: int = 0  # hostBlockPrefix(6); 0 in records written before they were kept
    block_prefix6: int = 0

    def subnets(self) -> list:
        return [ip_network(s) for s in (self.subnet, self.subnet6) if s]


def disagreement(name: str, recorded: NetworkRecord, wanted: NetworkRecord) -> str:
    """Why ``wanted`` cannot replace the network's ``recorded`` layout (pure); empty
    when it can. Hosts that cut one network into blocks of different sizes, or
    put it on another subnet or VNI, would hand out overlapping addresses or never
    reach each other; the DNS domain alone may change."""
    fields = [("subnet", "subnet"), ("subnet6", "subnet6"), ("vni", "vxlan.vni")]
    if recorded.block_prefix:
        fields += [("block_prefix", "hostBlockPrefix"), ("block_prefix6", "hostBlockPrefix6")]
    differs = [
        f"{option} {getattr(recorded, field) or 'none'} (this config: "
        f"{getattr(wanted, field) or 'none'})"
        for field, option in fields
        if getattr(recorded, field) != getattr(wanted, field)
    ]
    if not differs:
        return ""
    return (
        f"network {name} is recorded with " + ", ".join(differs) + ": give every host the "
        "same subnet, subnet6, hostBlockPrefix and vxlan.vni for a network, or use a new name"
    )


def networks(store: Store) -> dict[str, NetworkRecord]:
    prefix = f"{keys.ROOT}networks/"
    return {
        kv.key[len(prefix) :]: NetworkRecord(**keys.decode(kv.value))
        for kv in store.range(prefix, prefix=True).kvs
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
            found.append(f"vxlan.vni {record.vni} is network {other_name}'s: set another vxlan.vni")
    return found


def ensure_network(store: Store, name: str, record: NetworkRecord) -> None:
    """Record ``name`` as ``record`` unless it already is; raises NetworkConflict.

    One read when nothing changed, which is every ADD after a network's first.
    A write also bumps the registry key, and compares it unchanged since before
    the other records were read: two networks recorded at once cannot both
    miss each other's overlap.
    """
    key, registry_key = keys.network_key(name), keys.network_registry_key()
    for _ in range(MAX_ATTEMPTS):
        current = store.get(key)
        if current is not None:
            recorded = NetworkRecord(**keys.decode(current.value))
            if recorded == record:
                return
            if problem := disagreement(name, recorded, record):
                raise NetworkConflict(problem)
        registry = store.get(registry_key)
        problems = conflicts(name, record, networks(store))
        if problems:
            raise NetworkConflict(f"network {name}: " + "; ".join(problems))
        compares = [
            Compare.absent(key) if current is None else Compare.unchanged(current),
            Compare.absent(registry_key) if registry is None else Compare.unchanged(registry),
        ]
        puts = [
            Put(key, keys.encode(asdict(record))),
            Put(registry_key, keys.encode({"network": name})),
        ]
        if store.txn(compares, puts).succeeded:
            return
    raise Contention(f"could not record network {name} after {MAX_ATTEMPTS} attempts")
