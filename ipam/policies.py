"""Policies in the store: one record per policy (``schema.Policies``).

``apply`` writes a whole validated set in one transaction: every policy or none.
A set is therefore limited to what one transaction holds on etcd's defaults
(``--max-txn-ops`` 128, ``--max-request-bytes`` 1.5 MiB): more would fail on
etcd while working on SQLite. Splitting it into several transactions would
give up all-or-nothing (a failure half-way leaves half a set in force), so a
larger set is refused before anything is written, with the limit named.

The policy revision (``revision``) is the newest mod revision among the policy
records and ``PolicyDeleted`` (which ``delete`` bumps): what hosts report they
enforce, and what ``netplugctl status`` compares their reports with.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from netplug.ipam.schema import Policies, PolicyDeleted, SchemaError
from netplug.ipam.store.base import Compare, Delete, KeyValue, Put, Store
from netplug.policy.model import Policy, PolicyError

log = logging.getLogger(__name__)

MAX_PER_APPLY = 128  # etcd's default --max-txn-ops: one Put per policy
# Keys and values of one apply: etcd's default --max-request-bytes is 1.5 MiB,
# and the request's framing (about 10 bytes an operation) must fit beside them.
MAX_APPLY_BYTES = 1280 << 10
REVISION_KEYS = (Policies.PREFIX, PolicyDeleted.KEY)  # what ``revision`` reads (as prefixes)


def apply(store: Store, policies: Sequence[Policy]) -> int:
    """Create or replace each of ``policies`` (validated already), atomically;
    returns the store revision they were written at. Raises PolicyError, having
    written nothing, for a set larger than one transaction holds (see the module)."""
    puts = [Put(Policies.key(p.name), Policies.encode(p)) for p in policies]
    if problems := too_large(puts):
        raise PolicyError(problems)
    return store.txn([], puts).revision


def too_large(puts: Sequence[Put]) -> list[str]:
    """Why ``puts`` do not fit in one store transaction on etcd's defaults (empty: they do)."""
    split = "split the document into several (each is applied whole)"
    size = sum(len(put.key.encode()) + len(put.value) for put in puts)
    problems = []
    if len(puts) > MAX_PER_APPLY:
        problems.append(
            f"document: expected at most {MAX_PER_APPLY} policies (one store transaction "
            f"on etcd's default --max-txn-ops): {split}, got {len(puts)}"
        )
    if size > MAX_APPLY_BYTES:
        problems.append(
            f"document: expected policies of at most {MAX_APPLY_BYTES} bytes as stored "
            f"(one store transaction within etcd's default --max-request-bytes): {split}, "
            f"got {size} bytes"
        )
    return problems


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
    """Remove the policy ``name``, moving the policy revision on; False when there
    was none (nothing changes)."""
    key = Policies.key(name)
    deleted = [Delete(key), Put(PolicyDeleted.key(), PolicyDeleted.encode(name))]
    return store.txn([Compare(key, "create", ">", 0)], deleted).succeeded


def revision(kvs: Iterable[KeyValue]) -> int:
    """The policy revision of ``kvs`` (records of other kinds are ignored; 0: no
    policy was ever written or deleted)."""
    return max((kv.mod_revision for kv in kvs if kv.key.startswith(REVISION_KEYS)), default=0)
