"""``netplugctl recover``: rebuild this host's records in a store that was reset
or replaced, from what the host itself still has.

Each host veth of netplug on a bridge in this namespace is a container that
runs; the host's own copy of its attachment record (``cni.local_records``)
says which container, addresses and names it has. Each is written back to
the store - its block, its addresses, its attachment record - in one
transaction that creates only what is missing and changes nothing that is
there; so are, first, the network and VTEP records the host kept, and then
the policies it kept where the store has none of its own since the reset
(``ipam.policies.restore``: they belong to no host, every host keeps them). A record
that disagrees (a block another host holds meanwhile, an address another
container holds, a network recorded on another subnet) is reported as a
conflict and left alone.
When nothing conflicts, the host adopts the store's identity (giving the
store one when it has none), so that its calls are served again. Running it
again finds everything present: it is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

from netplug.cni import local_records
from netplug.ipam import identity, policies, vteps
from netplug.ipam.allocations import MAX_ATTEMPTS, Attachment, Contention
from netplug.ipam.networks import NetworkConflict, NetworkRecord, ensure_network
from netplug.ipam.policies import PRESENT, RESTORED
from netplug.ipam.schema import (
    AddressOwner,
    Attachments,
    Blocks,
    Ips,
    MalformedRecord,
    Networks,
)
from netplug.ipam.store.base import Compare, KeyValue, Put, Store
from netplug.policy.model import PolicyError, parse_document


@dataclass(frozen=True, slots=True)
class Row:
    network: str
    container: str
    ifname: str
    addresses: str
    veth: str
    state: str  # RESTORED, PRESENT, "conflict: ...", "no record: ..." or policies.LEFT_OUT
    policy: str = "-"  # the row of a policy (the others: of a network or an attachment)

    @property
    def conflict(self) -> bool:
        return self.state.startswith("conflict")


def wanted_records(attachment: Attachment) -> dict[str, bytes]:
    """The store keys and values an attachment of ``attachment.host`` consists of."""
    host = attachment.host
    owner = Ips.encode(AddressOwner(host, attachment.container_id, attachment.ifname))
    wanted = {attachment.key: Attachments.encode(attachment)}
    for a in attachment.allocations:
        wanted[Blocks.key(attachment.network, a.block)] = Blocks.encode(host)
        wanted[Ips.key(attachment.network, a.block, a.address.ip)] = owner
    return wanted


def disagreement(attachment: Attachment, current: dict[str, KeyValue | None]) -> str:
    """Why the records in the store keep ``attachment`` from being restored (pure);
    "" when every record there is this attachment's own."""
    for key, kv in current.items():
        if kv is not None and (problem := _held(attachment, key, kv.value)):
            return problem
    return ""


def _held(attachment: Attachment, key: str, value: bytes) -> str:
    """Why the record ``value`` under one of ``attachment``'s keys is not its own; ""."""
    try:
        if key == attachment.key:
            found = Attachments.decode(value, attachment.network, attachment.host)
            if found.allocations != attachment.allocations:
                return f"the store records other addresses for it: {found.record()['ips']}"
            return ""
        if key.startswith(Blocks.PREFIX):
            owner = AddressOwner(Blocks.decode(value), "", "")
        else:
            owner = Ips.decode(value)
    except MalformedRecord as e:
        return f"{key} holds a record that cannot be read ({e})"
    if owner.host != attachment.host:
        return f"{key} is held by host {owner.host}"
    if owner.container_id and (owner.container_id, owner.ifname) != (
        attachment.container_id,
        attachment.ifname,
    ):
        return f"{key} is held by container {owner.container_id}/{owner.ifname}"
    return ""


def restore(store: Store, attachment: Attachment) -> str:
    """Write what is missing of ``attachment``'s records; its state for the table."""
    wanted = wanted_records(attachment)
    for _ in range(MAX_ATTEMPTS):
        current = {key: store.get(key) for key in wanted}
        problem = disagreement(attachment, current)
        if problem:
            return f"conflict: {problem}"
        missing = [key for key, kv in current.items() if kv is None]
        if not missing:
            return PRESENT
        compares = [
            Compare.absent(key) if kv is None else Compare.unchanged(kv)
            for key, kv in current.items()
        ]
        if store.txn(compares, [Put(key, wanted[key]) for key in missing]).succeeded:
            return RESTORED
    raise Contention(f"could not restore {attachment.key} after {MAX_ATTEMPTS} attempts")


def restore_network(store: Store, host: str, name: str, kept: dict) -> str:
    """Write the network's record and this host's VTEP record back where missing
    (the other hosts' overlays need the VTEP); its state for the table."""
    existed = store.get(Networks.key(name)) is not None
    try:
        ensure_network(store, name, NetworkRecord(**kept["network"]))
    except NetworkConflict as e:
        return f"conflict: {e}"
    published = kept.get("vtep") is not None and vteps.publish(store, name, host, **kept["vtep"])
    return PRESENT if existed and not published else RESTORED


def host_veths() -> list[str]:
    """netplug's host veths on a bridge in this network namespace."""
    from netplug.net import links, netns, veth  # netlink: only for recover

    with netns.handle() as ipr:
        return sorted(
            link.name
            for link in links.all_links(ipr)
            if link.master and veth.is_host_veth_name(link.name)
        )


def recover(store: Store, host: str, run_dir: str, veths: list[str]) -> list[Row]:
    """Restore the attachments behind ``veths`` from the records kept under
    ``run_dir``; adopt the store's identity unless a row conflicts."""
    rows = [
        Row(
            name,
            "-",
            "-",
            " ".join(filter(None, (kept["network"]["subnet"], kept["network"]["subnet6"]))),
            "-",
            restore_network(store, host, name, kept),
        )
        for name, kept in local_records.read_networks(run_dir, host).items()
    ]
    rows += _policy_rows(store, run_dir, host)
    kept = local_records.read_all(run_dir, host)
    rows += [_row(store, name, kept.get(name)) for name in veths]
    if not any(row.conflict for row in rows):
        identity.adopt(store, identity.HostMemory(run_dir, host, store.url))
    return rows


def _policy_rows(store: Store, run_dir: str, host: str) -> list[Row]:
    """The policies ``host`` kept, each written back where the store lets them be."""
    documents = local_records.read_policies(run_dir, host)
    if not documents:
        return []
    try:
        kept = parse_document(documents, None)
    except PolicyError as e:
        return [Row("-", "-", "-", "-", "-", f"no record: the policy copy does not read: {e}")]
    states = policies.restore(store, kept)
    left_out = [p for p in kept if states[p.name] == policies.LEFT_OUT]
    if left_out:  # the copy is the store's again once the agent follows it: kept aside
        aside = local_records.write_policies(
            run_dir, host, policies.documents(left_out), local_records.NOT_RESTORED
        )
        states.update({p.name: f"{policies.LEFT_OUT}; apply it from {aside}" for p in left_out})
    return [Row(p.network, "-", "-", "-", "-", states[p.name], p.name) for p in kept]


def _row(store: Store, veth: str, attachment: Attachment | None) -> Row:
    if attachment is None:
        return Row(
            "-", "-", "-", "-", veth, "no record: not restored; delete the veth or its container"
        )
    return Row(
        attachment.network,
        attachment.container_id,
        attachment.ifname,
        " ".join(str(a.address) for a in attachment.allocations),
        veth,
        restore(store, attachment),
    )
