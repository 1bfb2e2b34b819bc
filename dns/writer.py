"""The registry's store side: read a whole snapshot, write and remove API names.

Blocking, like the store; async callers use ``asyncio.to_thread``. Every
method raises ``StoreUnavailable`` when the store cannot be reached.

A registration with a TTL rides on a store lease of that TTL: a PUT grants a
fresh lease, writes the name under it, then revokes the lease of the previous
registration (whose keys have moved to the new lease, so only the lease goes).
Without a TTL the name is written under no lease and stays until DELETE.
"""

from __future__ import annotations

from itertools import chain

from netplug.dns.records import Registration
from netplug.dns.registry import FOLLOWED, Snapshot
from netplug.ipam.schema import Names
from netplug.ipam.store.base import Get, KeyValue, Store


def read_snapshot(store: Store) -> Snapshot:
    """The registry as of now: every prefix read at one revision (one transaction)."""
    result = store.txn((), [Get(prefix, prefix=True) for prefix in FOLLOWED])
    kvs: list[list[KeyValue]] = result.responses  # type: ignore[assignment]
    return Snapshot.build(chain.from_iterable(kvs), result.revision)


class RegistryWriter:
    """API registrations in ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def put(self, registration: Registration) -> None:
        """Register (or replace) a name; idempotent."""
        key = Names.key(registration.name)
        old = self.store.get(key)
        lease = self.store.grant(registration.ttl) if registration.ttl else 0
        self.store.put(key, registration.encode(), lease)
        if old is not None and old.lease and old.lease != lease:
            self.store.revoke(old.lease)

    def delete(self, name: str) -> bool:
        """Remove a registered name; False when there was none."""
        key = Names.key(name)
        old = self.store.get(key)
        if old is None:
            return False
        self.store.delete(key)
        if old.lease:
            self.store.revoke(old.lease)
        return True

    def snapshot(self) -> Snapshot:
        return read_snapshot(self.store)
