"""Policies in the store: one record per policy (``schema.Policies``).

``apply`` writes a whole validated set in one transaction: every policy or none.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from netplug.ipam.schema import Policies, SchemaError
from netplug.ipam.store.base import Put, Store
from netplug.policy.model import Policy

log = logging.getLogger(__name__)


def apply(store: Store, policies: Sequence[Policy]) -> int:
    """Create or replace each of ``policies`` (validated already), atomically;
    returns the store revision they were written at."""
    puts = [Put(Policies.key(p.name), Policies.encode(p)) for p in policies]
    return store.txn([], puts).revision


def read(store: Store) -> list[Policy]:
    """Every stored policy, by name. A record that does not read (written by hand)
    is logged and left out rather than failing every reader."""
    found = []
    for kv in store.range(Policies.PREFIX, prefix=True).kvs:
        try:
            found.append(Policies.decode(kv.value))
        except SchemaError as e:
            log.warning("skipping %s: %s", kv.key, e)
    return found


def get(store: Store, name: str) -> Policy | None:
    """The policy ``name``; None when there is none. Raises SchemaError when its
    record does not read."""
    kv = store.get(Policies.key(name))
    return None if kv is None else Policies.decode(kv.value)


def delete(store: Store, name: str) -> bool:
    """Remove the policy ``name``; False when there was none."""
    return store.delete(Policies.key(name)) > 0
