"""The store contract, run against every backend (``store`` is parametrized in
conftest.py): etcd v3 semantics of txn, revisions, range, watch and leases.

Revisions are relative: a test reads ``store.status()`` first (0 for a new
SQLite file, wherever the shared etcd has got to) and counts from there.
"""

from __future__ import annotations

import threading
import time

import pytest
from store_testing import KEYS, claim_all, collect, summary

from netplug.ipam.store.base import (
    Compare,
    Delete,
    Event,
    Get,
    KeyValue,
    LeaseNotFound,
    Put,
    Store,
)
from netplug.ipam.store.url import open_store

# -- revisions and keys -----------------------------------------------------------


def test_writes_bump_the_revision_and_track_key_history(store) -> None:
    r = store.status()
    assert store.put("a", b"1") == r + 1
    assert store.put("a", b"2") == r + 2
    assert store.get("a") == KeyValue("a", b"2", r + 1, r + 2, version=2)
    assert store.delete("a") == 1
    assert store.status() == r + 3
    assert store.get("a") is None
    store.put("a", b"3")
    assert store.get("a") == KeyValue("a", b"3", r + 4, r + 4, version=1)


def test_deleting_nothing_keeps_the_revision(store) -> None:
    r = store.put("a", b"1")
    assert store.delete("b") == 0
    assert store.status() == r


def test_another_store_on_the_same_url_sees_the_same_data(store) -> None:
    r = store.put("a", b"1")
    other = open_store(store.url)
    try:
        assert other.status() == r
        assert other.get("a") == store.get("a")
    finally:
        other.close()


def test_values_are_bytes_and_keys_any_text(store) -> None:
    value = bytes(range(256))
    store.put("名前/ä", value)
    store.put("k", b"")
    assert store.get("名前/ä").value == value
    assert store.get("k").value == b""
    assert [kv.key for kv in store.range("名前/", prefix=True).kvs] == ["名前/ä"]


# -- txn ---------------------------------------------------------------------------


@pytest.fixture
def k_at_2_3(store) -> Store:
    """Key "k" created at revision base+2, modified at base+3: version 2, value b"v2"."""
    store.put("other", b"x")
    store.put("k", b"v1")
    store.put("k", b"v2")
    return store


@pytest.mark.parametrize(
    ("target", "op", "value", "holds"),
    [
        ("create", "=", 2, True),
        ("create", "!=", 2, False),
        ("create", "<", 3, True),
        ("create", ">", 2, False),
        ("mod", "=", 3, True),
        ("mod", "!=", 3, False),
        ("mod", "<", 3, False),
        ("mod", ">", 2, True),
        ("version", "=", 2, True),
        ("version", "!=", 1, True),
        ("version", "<", 3, True),
        ("version", ">", 2, False),
        ("value", "=", b"v2", True),
        ("value", "!=", b"v2", False),
        ("value", "<", b"v3", True),
        ("value", ">", b"v1", True),
    ],
)
def test_compare_on_existing_key(k_at_2_3, target, op, value, holds) -> None:
    base = k_at_2_3.status() - 3
    if target in ("create", "mod"):
        value += base
    result = k_at_2_3.txn([Compare("k", target, op, value)], [], [])
    assert result.succeeded is holds
    assert result.revision == base + 3


@pytest.mark.parametrize(
    ("target", "op", "value", "holds"),
    [
        ("create", "=", 0, True),
        ("mod", "<", 1, True),
        ("version", "=", 0, True),
        ("version", ">", 0, False),
        ("value", "=", b"", True),
        ("value", "!=", b"x", True),
        ("value", "<", b"x", True),
        ("value", "=", b"x", False),
        ("value", ">", b"", False),
    ],
)
def test_missing_key_compares_as_zero_and_empty(store, target, op, value, holds) -> None:
    assert store.txn([Compare("nope", target, op, value)], []).succeeded is holds


def test_missing_key_value_compares_combine_with_others(store) -> None:
    store.put("present", b"p")
    compares = [
        Compare("nope", "value", "=", b""),
        Compare("nope2", "value", "!=", b"x"),
        Compare("present", "value", "=", b"p"),
    ]
    result = store.txn(compares, [Put("new", b"1"), Get("present")], [Get("new")])
    assert result.succeeded
    assert result.responses[0] is None
    assert [kv.key for kv in result.responses[1]] == ["present"]
    store.put("nope", b"now here")
    result = store.txn(compares, [Put("new", b"2")], [Get("new")])
    assert not result.succeeded
    assert [kv.value for kv in result.responses[0]] == [b"1"]


def test_bad_compare_is_a_value_error(store) -> None:
    with pytest.raises(ValueError, match="bad compare"):
        store.txn([Compare("k", "lease", "=", 0)], [])  # type: ignore[arg-type]


def test_txn_success_branch_responses_and_one_revision(k_at_2_3) -> None:
    r = k_at_2_3.status()
    result = k_at_2_3.txn(
        [Compare("k", "version", "=", 2), Compare.absent("new")],
        [Put("new/1", b"a"), Put("new/2", b"b"), Get("new/", prefix=True), Delete("other")],
        [Get("k")],
    )
    assert result.succeeded
    assert result.revision == r + 1
    put1, put2, got, deleted = result.responses
    assert (put1, put2, deleted) == (None, None, 1)
    assert got == [
        KeyValue("new/1", b"a", r + 1, r + 1, 1),
        KeyValue("new/2", b"b", r + 1, r + 1, 1),
    ]


def test_txn_failure_branch_runs_instead(k_at_2_3) -> None:
    r = k_at_2_3.status()
    kv = k_at_2_3.get("k")
    result = k_at_2_3.txn(
        [Compare.absent("k")], [Put("k", b"lost")], [Get("k"), Put("k", b"v3"), Delete("missing")]
    )
    assert not result.succeeded
    assert result.responses == [[kv], None, 0]
    assert result.revision == r + 1
    assert k_at_2_3.get("k").value == b"v3"


def test_read_only_txn_does_not_bump(k_at_2_3) -> None:
    r = k_at_2_3.status()
    result = k_at_2_3.txn([Compare("k", "value", "=", b"nope")], [Put("k", b"x")], [Get("k")])
    assert not result.succeeded
    assert result.revision == r
    assert k_at_2_3.status() == r


def test_compare_unchanged_guards_a_read_modify_write(k_at_2_3) -> None:
    kv = k_at_2_3.get("k")
    k_at_2_3.put("k", b"raced")
    assert not k_at_2_3.txn([Compare.unchanged(kv)], [Put("k", b"stale")]).succeeded
    assert k_at_2_3.get("k").value == b"raced"


# -- range and delete -----------------------------------------------------------------


@pytest.fixture
def tree(store) -> Store:
    for key in ["b/2", "a", "b/10", "b/1", "b0", "c", "b"]:
        store.put(key, key.encode())
    return store


def test_prefix_range_is_in_key_order_and_excludes_neighbours(tree) -> None:
    result = tree.range("b/", prefix=True)
    assert [kv.key for kv in result.kvs] == ["b/1", "b/10", "b/2"]
    assert result.revision == tree.status()


def test_range_limit_and_whole_keyspace(tree) -> None:
    assert [kv.key for kv in tree.range("b/", prefix=True, limit=2).kvs] == ["b/1", "b/10"]
    assert [kv.key for kv in tree.range("", prefix=True).kvs] == [
        "a",
        "b",
        "b/1",
        "b/10",
        "b/2",
        "b0",
        "c",
    ]
    assert [kv.key for kv in tree.range("b").kvs] == ["b"]
    assert tree.range("zz").kvs == []


def test_delete_prefix(tree) -> None:
    r = tree.status()
    assert tree.delete("b/", prefix=True) == 3
    assert tree.status() == r + 1
    assert [kv.key for kv in tree.range("", prefix=True).kvs] == ["a", "b", "b0", "c"]


# -- watch ------------------------------------------------------------------------------


def test_watch_yields_prefix_events_in_order_with_prev_values(store) -> None:
    r = store.status()
    events = store.watch("net/", 0, timeout=0.05)
    assert next(events) == []  # nothing yet: an empty batch after the timeout
    store.put("net/a", b"1")
    store.put("other", b"x")
    store.txn([], [Put("net/b", b"2"), Put("net/a", b"3")])
    store.delete("net/", prefix=True)
    got = collect(events, 5)
    assert summary(got, r) == [
        ("put", "net/a", 1),
        ("put", "net/b", 3),
        ("put", "net/a", 3),
        ("delete", "net/a", 4),
        ("delete", "net/b", 4),
    ]
    assert got[0] == Event("put", KeyValue("net/a", b"1", r + 1, r + 1, 1), None)
    assert got[2] == Event("put", KeyValue("net/a", b"3", r + 1, r + 3, 2), b"1")
    assert got[3] == Event("delete", KeyValue("net/a", b"", 0, r + 4, 0), b"3")


def test_watch_sees_another_clients_writes(store) -> None:
    r = store.status()
    events = store.watch("", 0, timeout=0.05)
    next(events)
    writer = open_store(store.url)
    try:
        writer.put("x", b"1")
        assert summary(collect(events, 1), r) == [("put", "x", 1)]
    finally:
        writer.close()


def test_watch_resumes_from_a_revision_without_gaps(store) -> None:
    r = store.status()
    for i in range(6):
        store.put(f"k/{i}", b"v")
    first = store.watch("k/", r + 1, timeout=0.05)
    seen = collect(first, 3)[:3]
    first.close()
    resumed = store.watch("k/", seen[-1].kv.mod_revision + 1, timeout=0.05)
    rest = collect(resumed, 3)
    assert [e.kv.mod_revision - r for e in seen + rest] == [1, 2, 3, 4, 5, 6]


def test_watch_keeps_a_revision_in_one_batch(store) -> None:
    r = store.status()
    store.txn([], [Put(f"k/{i}", b"v") for i in range(50)])
    store.put("k/z", b"v")
    events = store.watch("k/", r + 1, timeout=0.05)
    batches: list[list[Event]] = []
    deadline = time.monotonic() + 5  # etcd replays past revisions to a new watcher every 0.1 s
    while sum(map(len, batches)) < 51:
        assert time.monotonic() < deadline, f"only {batches} arrived"
        batches += [b for b in [next(events)] if b]
    first = [e.kv.mod_revision - r for e in batches[0]]
    assert first[:50] == [1] * 50
    assert summary([e for b in batches for e in b][50:], r) == [("put", "k/z", 2)]


def test_watch_empty_batches_keep_coming(store) -> None:
    events = store.watch("", 0, timeout=0.02)
    next(events)
    started = time.monotonic()
    assert [next(events) for _ in range(3)] == [[], [], []]
    assert time.monotonic() - started < 1


# -- leases -------------------------------------------------------------------------------


def test_expired_lease_deletes_its_keys_with_events(store, ttl) -> None:
    r = store.status()
    lease = store.grant(ttl)
    store.put("host/a", b"up", lease=lease)
    store.put("host/b", b"static")
    assert store.get("host/a").lease == lease
    events = store.watch("host/", store.status() + 1, timeout=0.05)
    got = collect(events, 1, timeout=ttl + 2.5)
    assert summary(got, r) == [("delete", "host/a", 3)]
    assert got[0].prev_value == b"up"
    assert [kv.key for kv in store.range("host/", prefix=True).kvs] == ["host/b"]
    with pytest.raises(LeaseNotFound):
        store.keepalive(lease)


def test_keepalive_extends_a_lease(store) -> None:
    # A TTL that a stall of the loaded machine between two keepalives cannot outlast.
    ttl = 1.0
    lease = store.grant(ttl)
    store.put("k", b"v", lease=lease)
    until = time.monotonic() + 2 * ttl + 0.2
    while time.monotonic() < until:
        assert store.keepalive(lease) == pytest.approx(ttl)
        assert store.get("k") is not None
        time.sleep(ttl / 6)


def test_revoke_deletes_keys_and_a_missing_lease_is_fine(store) -> None:
    r = store.status()
    lease = store.grant(60)
    store.txn([], [Put("a", b"1", lease), Put("b", b"2", lease), Put("c", b"3")])
    store.revoke(lease)
    assert store.status() == r + 2
    assert [kv.key for kv in store.range("", prefix=True).kvs] == ["c"]
    assert summary(collect(store.watch("", r + 2, timeout=0.05), 2), r) == [
        ("delete", "a", 2),
        ("delete", "b", 2),
    ]
    store.revoke(lease)
    store.revoke(12345)
    assert store.status() == r + 2


def test_put_with_a_dead_lease_changes_nothing(store) -> None:
    r = store.status()
    lease = store.grant(60)
    store.revoke(lease)
    with pytest.raises(LeaseNotFound):
        store.txn([], [Put("a", b"1"), Put("b", b"2", lease)])
    with pytest.raises(LeaseNotFound):
        store.put("c", b"3", lease=999)
    assert store.status() == r
    assert store.get("a") is None


def test_lease_ids_are_positive_and_never_reused(store) -> None:
    first = store.grant(60)
    store.revoke(first)
    assert store.grant(60) != first > 0
    with pytest.raises(ValueError, match="positive"):
        store.grant(0)


# -- concurrency ---------------------------------------------------------------------------


def test_threads_share_one_store(store) -> None:
    created: list[int] = []
    threads = [
        threading.Thread(
            target=lambda i=i: created.append(
                claim_all(store, f"t{i}", KEYS[::-1] if i % 2 else KEYS[:200])
            )
        )
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert sum(created) == 500
    kvs = store.range("alloc/", prefix=True).kvs
    assert len(kvs) == 500
    assert {kv.version for kv in kvs} == {1}


def test_close_then_reuse_reopens(store) -> None:
    store.put("a", b"1")
    store.close()
    assert store.get("a").value == b"1"
