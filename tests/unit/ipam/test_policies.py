"""Policies in the store, on SQLite and on a real etcd."""

from __future__ import annotations

import json

from netplug.ipam import policies
from netplug.ipam.schema import Policies
from netplug.policy.model import parse


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
