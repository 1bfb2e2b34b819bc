"""What the agent's store view carries over a store reset: the records of the
hosts that have not recovered yet (pure).

A reset store comes back empty, each host's ``netplugctl recover`` writes its
own records back, one host after another, and each agent follows the store
again once its own host has recovered. Followed as it is then, the store lacks
every host that has not recovered: this host's overlay would drop its peers
toward them, its DNS their containers' names, its policies their containers'
addresses, until each recovers (and for the few milliseconds between a host's
recover and its agent's registration, even when every host recovered at once).
The view carries those records of its read before the reset instead
(``carried``): a record until the store has its own at that key, a host's
records until its agent registers again (its recover is done by then: an agent
writes nothing to a store its host has not recovered), a container's until its
block goes to another host (which may hand out its address), and all of them
for a grace at most (``netplugd --recover-grace``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from ipaddress import ip_network

from netplug.ipam.schema import Attachments, Blocks, Hosts, SchemaError, Vteps
from netplug.ipam.store.base import Event, KeyValue

Carried = dict[str, dict[str, KeyValue]]  # host -> key -> its record before the reset
RECOVER_GRACE = 600.0  # seconds at most a host's records are carried
# Seconds a carry saved when the store was found reset stays worth beginning: an
# agent that starts a day later would carry records that stand for nothing now.
SAVED_MAX_AGE = 86400.0


def owner(kv: KeyValue) -> str | None:
    """The host a record belongs to, for the kinds a host's recover writes back
    and its agent registers; None for any other record, or one that does not parse."""
    try:
        if kv.key.startswith(Hosts.PREFIX):
            return Hosts.parse(kv.key)
        if kv.key.startswith(Vteps.PREFIX):
            return Vteps.parse(kv.key).host
        if kv.key.startswith(Attachments.PREFIX):
            return Attachments.parse(kv.key).host
        if kv.key.startswith(Blocks.PREFIX):
            return Blocks.decode(kv.value)
    except SchemaError:
        return None
    return None


def by_owner(records: Mapping[str, KeyValue], me: str) -> Carried:
    """The records of ``records`` that hosts other than ``me`` own, by host."""
    carry: Carried = {}
    for key, kv in records.items():
        host = owner(kv)
        if host is not None and host != me:
            carry.setdefault(host, {})[key] = kv
    return carry


def carried(before: Mapping[str, KeyValue], after: Mapping[str, KeyValue], me: str) -> Carried:
    """The records of ``before`` (the read before the store was refused) of the
    hosts other than ``me`` that ``after`` (the first read after ``me``
    recovered) does not speak for (``refresh``)."""
    carry = by_owner(before, me)
    refresh(carry, after)
    return carry


def refresh(carry: Carried, after: Mapping[str, KeyValue]) -> None:
    """Take a full read (``after``) into ``carry`` (in place): a host whose host
    record it holds registered again, so its recover was done (its agent writes
    none to a store it has not recovered), and is carried no more; a key it holds
    is the store's; an attachment in a block it gives to another host (or to
    none) is gone."""
    owners = {k: owner(kv) for k, kv in after.items() if k.startswith(Blocks.PREFIX)}
    for host in list(carry):
        kept = {
            key: kv
            for key, kv in carry[host].items()
            if key not in after and not _elsewhere(kv, host, owners)
        }
        if kept and Hosts.key(host) not in after:
            carry[host] = kept
        else:
            del carry[host]


def settle(carry: Carried, events: Iterable[Event], revision: int) -> list[Event]:
    """Take the store's ``events`` into ``carry`` (in place), as ``refresh`` a
    full read. The deletes, at ``revision``, of what it carries no more and the
    store did not write: to follow ``events`` (never empty when it is)."""
    written = {event.kv.key: event for event in events}
    owners = {
        key: owner(event.kv) if event.type == "put" else None
        for key, event in written.items()
        if key.startswith(Blocks.PREFIX)
    }
    gone: list[str] = []
    for host in list(carry):
        records = carry[host]
        registration = written.get(Hosts.key(host))
        registered = registration is not None and registration.type == "put"
        for key in list(records):
            if key in written:
                del records[key]
            elif registered or _elsewhere(records[key], host, owners):
                del records[key]
                gone.append(key)
        if not records:
            del carry[host]
    return [deletion(key, revision) for key in gone]


def _elsewhere(kv: KeyValue, host: str, owners: Mapping[str, str | None]) -> bool:
    """Whether ``kv``, an attachment of ``host``, has an address in a block that
    ``owners`` (block key -> its holder, None: released) gives to another host
    or to none: then another container may hold that address now."""
    return any(block in owners and owners[block] != host for block in _blocks(kv))


def _blocks(kv: KeyValue) -> list[str]:
    """The keys of the blocks an attachment record's addresses are in ([]: not
    an attachment, or unreadable)."""
    if not kv.key.startswith(Attachments.PREFIX):
        return []
    try:
        network = Attachments.parse(kv.key).network
        ips = json.loads(kv.value)["ips"]
        return [Blocks.key(network, ip_network(ip["block"])) for ip in ips]
    except (SchemaError, ValueError, KeyError, TypeError):
        return []


def grace_left(grace: float, now: float, since: float | None, saved: float) -> float:
    """Seconds left of the grace of a carry that began at ``since`` (None: it
    begins ``now``) and was saved at ``saved`` (wall clock); 0: drop it. Never
    more than ``grace``, whatever the clock did."""
    if since is None:
        return grace if now - saved <= SAVED_MAX_AGE else 0.0
    return max(0.0, min(grace, since + grace - now))


def deletion(key: str, revision: int) -> Event:
    return Event("delete", KeyValue(key, b"", 0, revision, 0))


def flat(carry: Carried) -> dict[str, KeyValue]:
    return {key: kv for records in carry.values() for key, kv in records.items()}
