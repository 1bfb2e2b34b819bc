"""Segmentation and policy on one host: the store's records in, netplug's table out.

The pure half reads the records that decide the table (networks with their
``isolate``, attachments with their addresses, names and host, policies) into
``Inputs``, and decides what the host should hold (``wanted``: None when no
local network needs the table, which is then removed). The kernel half
(``converge``) turns what is programmed into that with one ``nft`` batch.

Two callers: the agent's enforcer (``netplug.agent.enforcer``) follows the store
and covers each ADD through ``Host.enforcer``; without an agent, ADD and DEL
program the whole table themselves, from one read of the store (``refresh``),
so that no container is ever attached unenforced. Without an agent a policy
change reaches a host only at its next ADD or DEL there: run netplugd. Both
delete the conntrack entries of the addresses that left a set, or changed
owner in one (``netplug.policy.departures``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path

from netplug.cni import local_records
from netplug.host import Host
from netplug.ipam import policies as stored_policies
from netplug.ipam.schema import (
    Attachment,
    Attachments,
    Identity,
    NetworkRecord,
    Networks,
    Policies,
    SchemaError,
)
from netplug.ipam.store.base import Event, Get, KeyValue
from netplug.locks import network_lock
from netplug.net import conntrack, policy_table
from netplug.policy import departures
from netplug.policy.model import Policy
from netplug.policy.plan import (
    TABLE,
    Dataplane,
    Endpoint,
    NetworkInfo,
    compile_plan,
    delta,
    from_listing,
    settled,
)

log = logging.getLogger(__name__)

WATCHED = (Networks.PREFIX, Attachments.PREFIX, Policies.PREFIX)
LOCK = ".policy-table"  # the lock file (beside the networks' own) of in-process programming
DONE = ".policy-table.done"  # what the last in-process refresh read: store, identity, revision

Bad = dict[str, tuple[int, str]]  # key -> (mod revision, why), as agent.records
_SERIALS = itertools.count(1)  # each Inputs' own number (``Inputs.since``)


@dataclass(slots=True)
class Inputs:
    """What the table is made of, as the records say (each record parsed alone)."""

    networks: dict[str, NetworkInfo] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)  # by attachment key
    policies: dict[str, Policy] = field(default_factory=dict)  # by record key
    bad: Bad = field(default_factory=dict)
    serial: int = field(default_factory=lambda: next(_SERIALS), compare=False)
    # When made by ``Reader.apply``: the serial of the Inputs it was derived from,
    # and the keys of ``endpoints`` that differ from that one's (else None, ()).
    # A follower then redoes just those containers' work, not every container's.
    since: int | None = field(default=None, compare=False)
    changed: frozenset[str] = field(default=frozenset(), compare=False)


def network_info(name: str, record: NetworkRecord) -> NetworkInfo:
    return NetworkInfo(name, tuple(record.subnets()), record.isolate)


def endpoint(attachment: Attachment) -> Endpoint:
    return Endpoint(
        attachment.network,
        attachment.host,
        tuple(a.address.ip for a in attachment.allocations),
        frozenset(attachment.names),
    )


def inputs(kvs: Iterable[KeyValue]) -> Inputs:
    """The networks, endpoints and policies of ``kvs`` (other keys ignored; a record
    that does not read is skipped into ``bad``, as the agent's other parts do)."""
    return Reader().inputs(kvs)


Parsed = tuple[str, str, object] | None  # (field of Inputs, key in it, value); None: ignored


Seen = tuple[int, bytes, Parsed]  # a record's (revision, value, parsed) as last decoded


class Reader:
    """``inputs`` for a follower: a record is decoded once per revision and value
    (a store reset may reuse revisions), and the same objects come back for the
    records that did not change (which then compare by identity first). After a
    full read (``inputs``), a batch of events costs the records it brings and a
    C-speed copy of each table (``apply``), not a pass over every record."""

    def __init__(self) -> None:
        self._seen: dict[str, Seen] = {}  # by key
        self._last = Inputs()

    def inputs(self, kvs: Iterable[KeyValue]) -> Inputs:
        """The Inputs of every record in ``kvs`` (a full read)."""
        found, seen = Inputs(), {}
        for kv in kvs:
            kept = self._kept(kv)
            seen[kv.key] = kept
            if kept[2] is not None:
                where, key, value = kept[2]
                getattr(found, where)[key] = value
        self._seen, self._last = seen, found
        return found

    def apply(self, events: Iterable[Event]) -> Inputs:
        """The last Inputs (of ``inputs`` or ``apply``) with ``events`` applied, in
        order; the same as ``inputs`` of the records they leave (tables in the
        same order: a record put again keeps its place), with ``since`` and
        ``changed`` telling what differs from the last."""
        last = self._last
        found = Inputs(
            last.networks.copy(), last.endpoints.copy(), last.policies.copy(), last.bad.copy()
        )
        changed: set[str] = set()
        for event in events:
            before = self._seen.pop(event.kv.key, None)
            after = self._kept(event.kv) if event.type == "put" else None
            if after is not None:
                self._seen[event.kv.key] = after
            _move(found, before, after, changed)
        found.since, found.changed = last.serial, frozenset(changed)
        self._last = found
        return found

    def _kept(self, kv: KeyValue) -> Seen:
        kept = self._seen.get(kv.key)
        if kept is None or kept[:2] != (kv.mod_revision, kv.value):
            kept = (kv.mod_revision, kv.value, _parse(kv))
        return kept


def _move(found: Inputs, before: Seen | None, after: Seen | None, changed: set[str]) -> None:
    """Take ``before``'s entry out of ``found`` and put ``after``'s in (noting the
    endpoint keys in ``changed``); an entry replaced in place keeps its position."""
    old = before[2] if before is not None else None
    new = after[2] if after is not None else None
    if old is not None and (new is None or old[:2] != new[:2]):
        getattr(found, old[0]).pop(old[1], None)
        if old[0] == "endpoints":
            changed.add(old[1])
    if new is not None:
        getattr(found, new[0])[new[1]] = new[2]
        if new[0] == "endpoints":
            changed.add(new[1])


def _parse(kv: KeyValue) -> Parsed:
    try:
        if kv.key.startswith(Networks.PREFIX):
            name = Networks.parse(kv.key)
            return "networks", name, network_info(name, Networks.decode(kv.value))
        if kv.key.startswith(Attachments.PREFIX):
            network, host, _, _ = Attachments.parse(kv.key)
            return "endpoints", kv.key, endpoint(Attachments.decode(kv.value, network, host))
        if kv.key.startswith(Policies.PREFIX):
            return "policies", kv.key, Policies.decode(kv.value)
    except SchemaError as e:
        return "bad", kv.key, (kv.mod_revision, f"{type(e).__name__}: {e}")
    return None


def needed(
    networks: Mapping[str, NetworkInfo],
    policies: Iterable[Policy],
    endpoints: Iterable[Endpoint],
    me: str,
) -> bool:
    """Whether host ``me`` needs the table: some network with a container here is
    isolated or has a policy. (A host with none keeps no table: the others' tables
    judge their own containers' traffic, sent and received.)"""
    local = {e.network for e in endpoints if e.host == me}
    governed = {p.network for p in policies}
    return any(n in governed or (n in networks and networks[n].isolate) for n in local)


def converge(
    programmed: Dataplane | None, want: Dataplane | None, present: bool
) -> Dataplane | None:
    """Make the kernel's table ``want`` (None: no table) from ``programmed`` (what it
    holds; None with ``present``: unknown, so every rule is rewritten); return what
    it now holds (``want`` with the generation ``settled`` chose)."""
    if want is None:
        if present:
            policy_table.remove(TABLE)
        return None
    old = programmed if present else None
    want = settled(old, want)
    policy_table.apply(delta(old, want))
    return want


def programmed() -> tuple[Dataplane | None, bool]:
    """What the kernel holds now (rules unknown: ``from_listing``), and whether the
    table exists."""
    listing = policy_table.listing(TABLE)
    return (None, False) if listing is None else (from_listing(listing), True)


def read_store(host: Host) -> tuple[Inputs, int]:
    """The records, from one transaction; and its revision."""
    result = host.store.txn((), [Get(p, prefix=True) for p in WATCHED])
    kvs = [kv for kvs in result.responses for kv in kvs]  # type: ignore[union-attr]
    return inputs(kvs), result.revision


def refresh(host: Host, run_dir: str) -> None:
    """Without an agent: program this host's table from the store, now (ADD, DEL,
    GC), under a host lock so that two plugin processes never interleave.

    Calls coalesce: each notes the store's revision first (after its own
    write), and one that gets the lock after a refresh which read the same
    store at that revision or later has nothing left to do (a burst of parallel
    ADDs costs a few refreshes, not one each)."""
    mark = _mark(host)
    with network_lock(run_dir, host.name, LOCK):
        done = Path(run_dir) / host.name / DONE
        last = _read_mark(done)
        if last is not None and last[:2] == mark[:2] and last[2] >= mark[2]:
            return
        found, revision = read_store(host)
        for key, (_, why) in found.bad.items():
            log.warning("segmentation: skipping unreadable record %s: %s", key, why)
        policies, endpoints = list(found.policies.values()), list(found.endpoints.values())
        want = None
        if needed(found.networks, policies, endpoints, host.name):
            plan = compile_plan(policies, found.networks.values())
            want = plan.dataplane(endpoints, host.name)
        current, present = programmed()
        after = converge(current, want, present)
        gone = departures.departed_between(current, after)
        if gone:
            conntrack.forget_or_log(map(ip_address, sorted(gone)), "segmentation")
        _keep_policies(run_dir, host.name, policies)
        _write_mark(done, (*mark[:2], revision))


def _keep_policies(run_dir: str, host: str, policies: list[Policy]) -> None:
    """What `netplugctl recover` brings back if the store is reset (an agent's
    policy copy keeps it likewise): policies belong to no host. A copy that
    cannot be written fails no ADD or DEL: it is logged."""
    try:
        local_records.write_policies(run_dir, host, stored_policies.documents(policies))
    except OSError as e:
        log.warning("segmentation: cannot keep the policy copy in %s: %s", run_dir, e)


def _mark(host: Host) -> tuple[str, str, int]:
    """(store URL, the store's identity, its revision now)."""
    result = host.store.txn((), [Get(Identity.key())])
    (found,) = result.responses
    identity = found[0].value.decode(errors="replace") if found else ""  # type: ignore[index]
    return host.store.url, identity, result.revision


def _read_mark(path: Path) -> tuple[str, str, int] | None:
    try:
        url, identity, revision = json.loads(path.read_text())
        return str(url), str(identity), int(revision)
    except (OSError, ValueError, TypeError):
        return None  # none yet, or unreadable: refresh


def _write_mark(path: Path, mark: tuple[str, str, int]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(mark))
    os.replace(tmp, path)
