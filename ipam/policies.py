"""Policies in the store: one record per policy (``schema.Policies``).

``apply`` writes a whole validated set in one transaction: every policy or none.
A set is therefore limited to what one transaction holds on etcd's defaults
(``--max-txn-ops`` 128, ``--max-request-bytes`` 1.5 MiB): more would fail on
etcd while working on SQLite. Splitting it into several transactions would
give up all-or-nothing (a failure half-way leaves half a set in force), so a
larger set is refused before anything is written, with the limit named.

``restore`` writes a host's copy of the policies back into a store that was
reset (``netplugctl recover``): policies belong to no host, so no host's
records bring them back otherwise.

The policy revision (``revision``) is the newest mod revision among the policy
records and ``PolicyDeleted`` (which ``delete`` bumps): what hosts report they
enforce, and what ``netplugctl status`` compares their reports with.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from netplug.ipam.allocations import MAX_ATTEMPTS, Contention
from netplug.ipam.schema import Policies, PolicyDeleted, SchemaError
from netplug.ipam.store.base import Compare, Delete, Get, KeyValue, Put, Store
from netplug.policy.model import Policy, PolicyError

log = logging.getLogger(__name__)

MAX_PER_APPLY = 128  # etcd's default --max-txn-ops: one Put per policy
# Keys and values of one apply: etcd's default --max-request-bytes is 1.5 MiB,
# and the request's framing (about 10 bytes an operation) must fit beside them.
MAX_APPLY_BYTES = 1280 << 10
REVISION_KEYS = (Policies.PREFIX, PolicyDeleted.KEY)  # what ``revision`` reads (as prefixes)
# Policies a restore writes per transaction: well within etcd's --max-txn-ops
# (128 compares, 128 operations), with the compares and the keys in its bytes.
RESTORE_CHUNK = 64

RESTORED, PRESENT = "restored", "present"
DIFFERS = "present, unlike this host's copy (an older or newer version of it)"
LEFT_OUT = "not restored: the store holds policies this host's copy does not, or had one deleted"


def apply(store: Store, policies: Sequence[Policy]) -> int:
    """Create or replace each of ``policies`` (validated already), atomically;
    returns the store revision they were written at. Raises PolicyError, having
    written nothing, for a set larger than one transaction holds (see the module)."""
    puts = _puts(policies)
    if problems := too_large(puts):
        raise PolicyError(problems)
    return store.txn([], puts).revision


def too_large(puts: Sequence[Put]) -> list[str]:
    """Why ``puts`` do not fit in one store transaction on etcd's defaults (empty: they do)."""
    split = "split the document into several (each is applied whole)"
    size = sum(map(_stored_size, puts))
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


def documents(found: Iterable[Policy]) -> list[dict]:
    """What a host keeps of the policies ``found`` (``cni.local_records``): their
    normalized documents, by name."""
    return [p.to_json() for p in sorted(found, key=lambda p: p.name)]


def restore_states(
    kept: Mapping[str, Policy], stored: Mapping[str, Policy | None], deleted: bool
) -> dict[str, str]:
    """Each of the ``kept`` policies' state (pure): PRESENT when the store has it
    (DIFFERS when under its name the store has another one; ``stored``: by
    name, None where a record does not read);
    RESTORED (to be written) when every stored policy is a ``kept`` one, alike,
    and none was ``deleted`` since the reset (the store has none yet, or part of
    another host's restore); else LEFT_OUT: someone set the store's policies
    since, and a deleted one must not come back."""
    untouched = not deleted and all(
        p is not None and kept.get(name) == p for name, p in stored.items()
    )
    return {name: _state(p, stored, untouched) for name, p in kept.items()}


def _state(policy: Policy, stored: Mapping[str, Policy | None], untouched: bool) -> str:
    if policy.name in stored:
        return PRESENT if stored[policy.name] == policy else DIFFERS
    return RESTORED if untouched else LEFT_OUT


def restore(store: Store, kept: Sequence[Policy]) -> dict[str, str]:
    """Write the ``kept`` policies (a host's copy) that the store lacks back where
    ``restore_states`` allows; each one's state, by name. Each transaction writes
    only names still absent, with no policy deleted meanwhile."""
    by_name = {p.name: p for p in kept}
    for _ in range(MAX_ATTEMPTS):
        result = store.txn((), [Get(Policies.PREFIX, prefix=True), Get(PolicyDeleted.key())])
        records, deleted = result.responses
        stored = {Policies.parse(kv.key): readable(kv) for kv in records}  # type: ignore[union-attr]
        states = restore_states(by_name, stored, bool(deleted))
        missing = [by_name[name] for name, state in states.items() if state == RESTORED]
        if all(_write_absent(store, chunk) for chunk in _chunks(_puts(missing))):
            return states
    raise Contention(f"could not restore the policies after {MAX_ATTEMPTS} attempts")


def readable(kv: KeyValue) -> Policy | None:
    """The policy of record ``kv``; None when it does not read (its readers report it)."""
    try:
        return Policies.decode(kv.value)
    except SchemaError:
        return None


def _puts(policies: Iterable[Policy]) -> list[Put]:
    return [Put(Policies.key(p.name), Policies.encode(p)) for p in policies]


def _stored_size(put: Put) -> int:
    return len(put.key.encode()) + len(put.value)


def _chunks(puts: Sequence[Put]) -> Iterable[list[Put]]:
    """``puts`` in runs that fit one transaction (RESTORE_CHUNK, MAX_APPLY_BYTES)."""
    chunk: list[Put] = []
    size = 0
    for put in puts:
        if chunk and (len(chunk) == RESTORE_CHUNK or size + _stored_size(put) > MAX_APPLY_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(put)
        size += _stored_size(put)
    if chunk:
        yield chunk


def _write_absent(store: Store, puts: Sequence[Put]) -> bool:
    """Write ``puts`` if none of their keys exists and no policy was deleted meanwhile."""
    compares = [Compare.absent(PolicyDeleted.key()), *(Compare.absent(p.key) for p in puts)]
    return store.txn(compares, list(puts)).succeeded
