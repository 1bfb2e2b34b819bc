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
records until its agent registers again (its recover is done by then), and all
of them for a grace at most (``netplugd --recover-grace``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from netplug.ipam.schema import Attachments, Blocks, Hosts, SchemaError, Vteps
from netplug.ipam.store.base import Event, KeyValue

Carried = dict[str, dict[str, KeyValue]]  # host -> key -> its record before the reset
RECOVER_GRACE = 600.0  # seconds at most a host's records are carried


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


def carried(before: Mapping[str, KeyValue], after: Mapping[str, KeyValue], me: str) -> Carried:
    """The records of ``before`` (the read before the store was refused) that
    ``after`` (the first read after ``me`` recovered) lacks, of the other hosts
    that have not recovered: all of those with no record in ``after``; only
    the host record of those that recovered (what their recover did not write
    back is gone) and whose agent has not registered again yet."""
    recovered = {owner(kv) for kv in after.values()}
    found: Carried = {}
    for key, kv in before.items():
        host = owner(kv)
        if key in after or host is None or host == me:
            continue
        if host in recovered and key != Hosts.key(host):
            continue
        found.setdefault(host, {})[key] = kv
    return found


def settle(carry: Carried, events: Iterable[Event], revision: int) -> list[Event]:
    """Take the store's ``events`` into ``carry`` (in place): a key the store
    writes or deletes is its own again; a host whose agent registered (its host
    record put) is carried no more. The deletes of what that host had carried
    and the store did not write back, at ``revision``, to follow ``events``."""
    registered = []
    for event in events:
        key = event.kv.key
        for host, records in carry.items():
            records.pop(key, None)
            if event.type == "put" and key == Hosts.key(host):
                registered.append(host)
    return [deletion(key, revision) for host in registered for key in carry.pop(host, {})]


def refresh(carry: Carried, after: Mapping[str, KeyValue]) -> None:
    """Take a full read (``after``) into ``carry`` (in place): what it holds is the
    store's again, and a host whose host record it holds registered."""
    for host in list(carry):
        if Hosts.key(host) in after:
            del carry[host]
        else:
            carry[host] = {k: kv for k, kv in carry[host].items() if k not in after}


def deletion(key: str, revision: int) -> Event:
    return Event("delete", KeyValue(key, b"", 0, revision, 0))


def flat(carry: Carried) -> dict[str, KeyValue]:
    return {key: kv for records in carry.values() for key, kv in records.items()}
