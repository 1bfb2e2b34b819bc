"""Policies in the store, on SQLite and on a real etcd."""

from __future__ import annotations

import json

import pytest

from netplug.ipam import policies
from netplug.ipam.schema import Policies, PolicyDeleted
from netplug.ipam.store.base import Get
from netplug.policy.model import PolicyError, parse, parse_document


def docs(*names: str):
    return parse(
        json.dumps([{"name": n, "network": "blue", "select": {}, "ingress": []} for n in names]),
        {"blue"},
    )


def test_apply_writes_every_policy_at_one_revision(store):
    revision = policies.apply(store, docs("a", "b", "c"))
    kvs = store.range(Policies.PREFIX, prefix=True).kvs
    assert [kv.key for kv in kvs] == [Policies.key(n) for n in "abc"]
    assert {kv.mod_revision for kv in kvs} == {revision}
    assert [p.name for p in policies.read(store)] == ["a", "b", "c"]


def test_apply_replaces_a_policy_of_the_same_name(store):
    policies.apply(store, docs("a"))
    (changed,) = parse(
        json.dumps({"name": "a", "network": "blue", "select": {"names": ["db"]}}), {"blue"}
    )
    policies.apply(store, [changed])
    assert policies.get(store, "a") == changed


def test_get_and_delete(store):
    policies.apply(store, docs("a", "b"))
    assert policies.get(store, "b") == docs("b")[0]
    assert policies.get(store, "zz") is None
    assert policies.delete(store, "a") is True
    assert policies.delete(store, "a") is False
    assert [p.name for p in policies.read(store)] == ["b"]


def test_a_record_that_does_not_parse_is_skipped(store):
    policies.apply(store, docs("a"))
    store.put(Policies.key("bad"), b'{"name": "bad"}')
    store.put(Policies.key("junk"), b"\xff")
    assert [p.name for p in policies.read(store)] == ["a"]


def many(count: int, glob_bytes: int = 0):
    """``count`` policies, each selecting one glob of about ``glob_bytes`` bytes in
    names of 60 characters (the names' list makes the stored size)."""
    globs = ["n" * 60] * (glob_bytes // 63)
    select = {"names": globs} if globs else {}
    # parse_document: past the 1 MiB a document may take, for apply's own limits.
    return parse_document(
        [{"name": f"p{i:04d}", "network": "blue", "select": select} for i in range(count)], {"blue"}
    )


def stored_size(found) -> int:
    return sum(len(Policies.key(p.name)) + len(Policies.encode(p)) for p in found)


def test_as_many_policies_as_one_etcd_transaction_holds_are_applied(store):
    found = many(policies.MAX_PER_APPLY)
    revision = policies.apply(store, found)
    kvs = store.range(Policies.PREFIX, prefix=True).kvs
    assert len(kvs) == policies.MAX_PER_APPLY and {kv.mod_revision for kv in kvs} == {revision}


def test_a_near_limit_set_is_applied(store):
    found = many(policies.MAX_PER_APPLY, glob_bytes=10_150)
    assert policies.MAX_APPLY_BYTES - 10_000 < stored_size(found) <= policies.MAX_APPLY_BYTES
    policies.apply(store, found)
    assert len(policies.read(store)) == policies.MAX_PER_APPLY


@pytest.mark.parametrize(
    ("count", "glob_bytes", "message"),
    [
        (policies.MAX_PER_APPLY + 1, 0, "expected at most 128 policies (one store transaction"),
        (100, 14_000, "expected policies of at most 1310720 bytes as stored"),
    ],
    ids=["too-many", "too-large"],
)
def test_a_set_larger_than_one_transaction_is_refused_whole(store, count, glob_bytes, message):
    found = many(count, glob_bytes)
    revision = store.status()
    with pytest.raises(PolicyError, match="split the document into several") as refused:
        policies.apply(store, found)
    assert message in str(refused.value)
    assert store.range(Policies.PREFIX, prefix=True).kvs == []
    assert store.status() == revision


def policy_revision(store) -> int:
    result = store.txn((), [Get(p, prefix=True) for p in policies.REVISION_KEYS])
    return policies.revision(kv for kvs in result.responses for kv in kvs)


def test_the_policy_revision_moves_on_with_every_apply_and_delete(store):
    """What hosts report they enforce: a delete moves it on too (the newest policy
    record would otherwise make it go back), and a delete of nothing does not."""
    assert policy_revision(store) == 0
    first = policies.apply(store, docs("a"))
    second = policies.apply(store, docs("b"))
    assert policy_revision(store) == second > first
    store.put("/netplug/networks/blue", b"{}")  # another kind's write: no policy change
    assert policy_revision(store) == second
    assert policies.delete(store, "b")
    deleted = store.get(PolicyDeleted.key())
    assert deleted is not None and PolicyDeleted.decode(deleted.value) == "b"
    assert policy_revision(store) == deleted.mod_revision > second
    assert not policies.delete(store, "b")
    assert policy_revision(store) == deleted.mod_revision


# -- restore: a host's copy written back into a store that was reset --------------------


def by_name(found) -> dict:
    return {p.name: p for p in found}


def test_restore_states_writes_only_into_a_store_whose_policies_are_all_kept() -> None:
    kept = by_name(docs("a", "b"))
    other = parse(json.dumps({"name": "a", "network": "blue", "select": {}}), {"blue"})[0]
    cases = [
        ({}, False, {"a": policies.RESTORED, "b": policies.RESTORED}),  # the reset store
        ({"a": kept["a"]}, False, {"a": policies.PRESENT, "b": policies.RESTORED}),
        ({"a": other}, False, {"a": policies.DIFFERS, "b": policies.LEFT_OUT}),  # applied since
        ({"z": None}, False, {"a": policies.LEFT_OUT, "b": policies.LEFT_OUT}),  # unreadable
        ({}, True, {"a": policies.LEFT_OUT, "b": policies.LEFT_OUT}),  # one deleted since
    ]
    for stored, deleted, states in cases:
        assert policies.restore_states(kept, stored, deleted) == states, (stored, deleted)


def test_restore_writes_the_kept_policies_into_a_store_without_any(store) -> None:
    kept = docs("a", "b")
    assert policies.restore(store, kept) == dict.fromkeys("ab", policies.RESTORED)
    assert policies.read(store) == list(kept)
    # Another host's restore (or this one's again) finds them there.
    assert policies.restore(store, kept) == dict.fromkeys("ab", policies.PRESENT)


def test_restore_completes_another_hosts_and_leaves_a_store_changed_since(store) -> None:
    policies.apply(store, docs("a"))  # part of another host's restore
    assert policies.restore(store, docs("a", "b"))["b"] == policies.RESTORED
    policies.delete(store, "b")  # deleted after the reset: must not come back
    assert policies.restore(store, docs("a", "b"))["b"] == policies.LEFT_OUT
    assert [p.name for p in policies.read(store)] == ["a"]


@pytest.mark.parametrize(
    "count, glob_bytes",
    [(policies.MAX_PER_APPLY + 1, 0), (40, 40_000)],
    ids=["more than etcd's operations", "more than etcd's request bytes"],
)
def test_restore_writes_more_policies_than_one_transaction_holds(store, count, glob_bytes):
    """A store held more than one apply writes (applied in several): its copy must
    come back whole, in transactions etcd takes."""
    kept = many(count, glob_bytes)
    assert stored_size(kept) > policies.MAX_APPLY_BYTES or count > policies.MAX_PER_APPLY
    assert set(policies.restore(store, kept).values()) == {policies.RESTORED}
    assert policies.read(store) == list(kept)


def test_documents_are_the_normalized_policies_by_name() -> None:
    kept = docs("b", "a")
    assert policies.documents(kept) == [p.to_json() for p in reversed(kept)]
    assert parse_document(policies.documents(kept), None) == tuple(reversed(kept))
