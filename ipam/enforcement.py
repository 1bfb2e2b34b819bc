"""What each live host's agent reports of the policies it enforces (``schema.Enforcement``).

The agent writes its report under its host record's lease, so a dead host's
report goes with its record. ``read`` takes the policy revision, the live
hosts and their reports from one transaction: a report is never newer than the
revision it is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netplug.ipam import policies
from netplug.ipam.schema import Enforcement, EnforcementRecord, Hosts, SchemaError
from netplug.ipam.store.base import Get, KeyValue, Store


@dataclass(frozen=True, slots=True)
class Enforced:
    revision: int  # the store's policy revision
    live: tuple[str, ...]  # the hosts whose agent renews its lease
    reports: dict[str, EnforcementRecord]  # by live host
    bad: dict[str, str] = field(default_factory=dict)  # unreadable reports: key -> why


def write(store: Store, host: str, record: EnforcementRecord, lease: int) -> None:
    """Record ``host``'s report under ``lease`` (its host record's). Raises StoreError
    (LeaseNotFound when the lease has expired)."""
    store.put(Enforcement.key(host), Enforcement.encode(record), lease)


def read(store: Store) -> Enforced:
    """The policy revision, the live hosts and their readable reports."""
    prefixes = (*policies.REVISION_KEYS, Hosts.PREFIX, Enforcement.PREFIX)
    result = store.txn((), [Get(p, prefix=True) for p in prefixes])
    kvs: list[KeyValue] = [kv for found in result.responses for kv in found]  # type: ignore[union-attr]
    live = tuple(sorted(Hosts.parse(kv.key) for kv in kvs if kv.key.startswith(Hosts.PREFIX)))
    reports, bad = {}, {}
    for kv in kvs:
        if kv.key.startswith(Enforcement.PREFIX):
            try:
                host = Enforcement.parse(kv.key)
                if host in live:
                    reports[host] = Enforcement.decode(kv.value)
            except SchemaError as e:
                bad[kv.key] = f"{type(e).__name__}: {e}"
    return Enforced(policies.revision(kvs), live, reports, bad)
