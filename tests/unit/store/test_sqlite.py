"""The SQLite store against etcd v3 semantics: txn, revisions, range, watch, leases,
concurrency across threads and processes, and failure to open."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netplug.ipam.store import sqlite as sqlite_module
from netplug.ipam.store.base import (
    Compacted,
    Compare,
    Delete,
    Event,
    Get,
    KeyValue,
    LeaseNotFound,
    Put,
    StoreUnavailable,
)
from netplug.ipam.store.sqlite import SQLiteStore


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "state" / "netplug.db")


@pytest.fixture
def store(path: str) -> Iterator[SQLiteStore]:
    s = SQLiteStore(path, poll_interval=0.002)
    try:
        yield s
    finally:
        s.close()


def wait_until(condition: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def collect(events: Iterator[list[Event]], count: int, timeout: float = 3.0) -> list[Event]:
    """The first ``count`` events of a watch (which must yield [] at least every 0.1 s)."""
    got: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} events: {got}"
        got += next(events)
    return got


def summary(events: list[Event]) -> list[tuple[str, str, int]]:
    return [(e.type, e.kv.key, e.kv.mod_revision) for e in events]


# -- revisions and keys -----------------------------------------------------------


def test_new_store_creates_its_directory_and_starts_at_revision_zero(store, path) -> None:
    assert store.status() == 0
    assert Path(path).is_file()
    assert store.url == f"sqlite://{path}"


def test_writes_bump_the_revision_and_track_key_history(store) -> None:
    assert store.put("a", b"1") == 1
    assert store.put("a", b"2") == 2
    assert store.get("a") == KeyValue("a", b"2", create_revision=1, mod_revision=2, version=2)
    assert store.delete("a") == 1
    assert store.status() == 3
    assert store.get("a") is None
    store.put("a", b"3")
    assert store.get("a") == KeyValue("a", b"3", create_revision=4, mod_revision=4, version=1)


def test_deleting_nothing_keeps_the_revision(store) -> None:
    store.put("a", b"1")
    assert store.delete("b") == 0
    assert store.status() == 1


def test_revision_survives_reopening(store, path) -> None:
    store.put("a", b"1")
    other = SQLiteStore(path)
    try:
        assert other.status() == 1
        assert other.get("a") is not None
    finally:
        other.close()


# -- txn ---------------------------------------------------------------------------


@pytest.fixture
def k_at_2_3(store) -> SQLiteStore:
    """Key "k" created at revision 2, modified at 3: version 2, value b"v2"."""
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
    result = k_at_2_3.txn([Compare("k", target, op, value)], [], [])
    assert result.succeeded is holds
    assert result.revision == 3


@pytest.mark.parametrize(
    ("target", "op", "value", "holds"),
    [
        ("create", "=", 0, True),
        ("mod", "<", 1, True),
        ("version", "=", 0, True),
        ("version", ">", 0, False),
        ("value", "=", b"", True),
        ("value", ">", b"", False),
    ],
)
def test_missing_key_compares_as_zero_and_empty(store, target, op, value, holds) -> None:
    assert store.txn([Compare("nope", target, op, value)], []).succeeded is holds


def test_bad_compare_is_a_value_error(store) -> None:
    with pytest.raises(ValueError, match="bad compare"):
        store.txn([Compare("k", "lease", "=", 0)], [])  # type: ignore[arg-type]


def test_txn_success_branch_responses_and_one_revision(k_at_2_3) -> None:
    result = k_at_2_3.txn(
        [Compare("k", "version", "=", 2), Compare.absent("new")],
        [Put("new/1", b"a"), Put("new/2", b"b"), Get("new/", prefix=True), Delete("other")],
        [Get("k")],
    )
    assert result.succeeded
    assert result.revision == 4
    put1, put2, got, deleted = result.responses
    assert (put1, put2, deleted) == (None, None, 1)
    assert got == [KeyValue("new/1", b"a", 4, 4, 1), KeyValue("new/2", b"b", 4, 4, 1)]


def test_txn_failure_branch_runs_instead(k_at_2_3) -> None:
    kv = k_at_2_3.get("k")
    result = k_at_2_3.txn(
        [Compare.absent("k")], [Put("k", b"lost")], [Get("k"), Put("k", b"v3"), Delete("missing")]
    )
    assert not result.succeeded
    assert result.responses == [[kv], None, 0]
    assert result.revision == 4
    assert k_at_2_3.get("k").value == b"v3"


def test_read_only_txn_does_not_bump(k_at_2_3) -> None:
    result = k_at_2_3.txn([Compare("k", "value", "=", b"nope")], [Put("k", b"x")], [Get("k")])
    assert not result.succeeded
    assert result.revision == 3
    assert k_at_2_3.status() == 3


def test_compare_unchanged_guards_a_read_modify_write(k_at_2_3) -> None:
    kv = k_at_2_3.get("k")
    k_at_2_3.put("k", b"raced")
    assert not k_at_2_3.txn([Compare.unchanged(kv)], [Put("k", b"stale")]).succeeded
    assert k_at_2_3.get("k").value == b"raced"


# -- range and delete -----------------------------------------------------------------


@pytest.fixture
def tree(store) -> SQLiteStore:
    for key in ["b/2", "a", "b/10", "b/1", "b0", "c", "b"]:
        store.put(key, key.encode())
    return store


def test_prefix_range_is_in_key_order_and_excludes_neighbours(tree) -> None:
    result = tree.range("b/", prefix=True)
    assert [kv.key for kv in result.kvs] == ["b/1", "b/10", "b/2"]
    assert result.revision == 7


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
    assert tree.delete("b/", prefix=True) == 3
    assert tree.status() == 8
    assert [kv.key for kv in tree.range("", prefix=True).kvs] == ["a", "b", "b0", "c"]


# -- watch ------------------------------------------------------------------------------


def test_watch_yields_prefix_events_in_order_with_prev_values(store) -> None:
    events = store.watch("net/", 0, timeout=0.05)
    assert next(events) == []  # nothing yet: an empty batch after the timeout
    store.put("net/a", b"1")
    store.put("other", b"x")
    store.txn([], [Put("net/b", b"2"), Put("net/a", b"3")])
    store.delete("net/", prefix=True)
    got = collect(events, 5)
    assert summary(got) == [
        ("put", "net/a", 1),
        ("put", "net/b", 3),
        ("put", "net/a", 3),
        ("delete", "net/a", 4),
        ("delete", "net/b", 4),
    ]
    assert got[0] == Event("put", KeyValue("net/a", b"1", 1, 1, 1), None)
    assert got[2] == Event("put", KeyValue("net/a", b"3", 1, 3, 2), b"1")
    assert got[3] == Event("delete", KeyValue("net/a", b"", 0, 4, 0), b"3")


def test_watch_sees_other_processes_writes(store, path) -> None:
    events = store.watch("", 0, timeout=0.05)
    next(events)
    writer = SQLiteStore(path)
    try:
        writer.put("x", b"1")
        assert summary(collect(events, 1)) == [("put", "x", 1)]
    finally:
        writer.close()


def test_watch_resumes_from_a_revision_without_gaps(store) -> None:
    for i in range(6):
        store.put(f"k/{i}", b"v")
    first = store.watch("k/", 1, timeout=0.05)
    seen = collect(first, 3)[:3]
    first.close()
    resumed = store.watch("k/", seen[-1].kv.mod_revision + 1, timeout=0.05)
    rest = collect(resumed, 3)
    assert [e.kv.mod_revision for e in seen + rest] == [1, 2, 3, 4, 5, 6]


def test_watch_never_splits_a_revision(store, monkeypatch) -> None:
    monkeypatch.setattr(sqlite_module, "WATCH_BATCH", 3)
    store.txn([], [Put(f"k/{i}", b"v") for i in range(5)])
    store.put("k/z", b"v")
    events = store.watch("k/", 1, timeout=0.05)
    assert [e.kv.mod_revision for e in next(events)] == [1] * 5
    assert summary(next(events)) == [("put", "k/z", 2)]


def test_watch_empty_batches_keep_coming(store) -> None:
    events = store.watch("", 0, timeout=0.02)
    started = time.monotonic()
    assert [next(events) for _ in range(3)] == [[], [], []]
    assert time.monotonic() - started < 1


def test_watch_below_history_is_compacted(path) -> None:
    store = SQLiteStore(path, history=10)
    try:
        for i in range(30):
            store.put("k", str(i).encode())
        with pytest.raises(Compacted) as info:
            next(store.watch("k", 5, timeout=0.05))
        floor = info.value.compact_revision
        assert 10 <= floor < 30
        kept = collect(store.watch("k", floor + 1, timeout=0.05), 30 - floor)
        assert [e.kv.mod_revision for e in kept] == list(range(floor + 1, 31))
    finally:
        store.close()


# -- leases -------------------------------------------------------------------------------


def test_expired_lease_deletes_its_keys_with_events_without_other_writers(store) -> None:
    lease = store.grant(0.3)
    store.put("host/a", b"up", lease=lease)
    store.put("host/b", b"static")
    assert store.get("host/a").lease == lease
    events = store.watch("host/", store.status() + 1, timeout=0.05)
    got = collect(events, 1, timeout=2.5)
    assert summary(got) == [("delete", "host/a", 3)]
    assert got[0].prev_value == b"up"
    assert [kv.key for kv in store.range("host/", prefix=True).kvs] == ["host/b"]
    with pytest.raises(LeaseNotFound):
        store.keepalive(lease)


def test_reads_hide_keys_of_an_expired_lease_before_the_sweep(store, monkeypatch) -> None:
    monkeypatch.setattr(sqlite_module, "SWEEP_INTERVAL", 3600.0)  # readers never sweep
    lease = store.grant(0.2)
    store.put("k", b"v", lease=lease)
    store.put("keep", b"v")
    wait_until(lambda: store.get("k") is None)
    assert store.status() == 2  # not swept yet: nothing was written
    assert [kv.key for kv in store.range("", prefix=True).kvs] == ["keep"]
    assert store.txn([Compare.absent("k")], []).succeeded
    store.put("x", b"1")  # a write sweeps first, at a revision of its own
    assert store.status() == 4
    assert summary(collect(store.watch("k", 3, timeout=0.05), 1)) == [("delete", "k", 3)]


def test_keepalive_extends_a_lease(store) -> None:
    lease = store.grant(0.3)
    store.put("k", b"v", lease=lease)
    until = time.monotonic() + 0.7
    while time.monotonic() < until:
        assert store.keepalive(lease) == pytest.approx(0.3)
        assert store.get("k") is not None
        time.sleep(0.05)


def test_revoke_deletes_keys_and_a_missing_lease_is_fine(store) -> None:
    lease = store.grant(60)
    store.txn([], [Put("a", b"1", lease), Put("b", b"2", lease), Put("c", b"3")])
    store.revoke(lease)
    assert store.status() == 2
    assert [kv.key for kv in store.range("", prefix=True).kvs] == ["c"]
    assert summary(collect(store.watch("", 2, timeout=0.05), 2)) == [
        ("delete", "a", 2),
        ("delete", "b", 2),
    ]
    store.revoke(lease)
    store.revoke(12345)
    assert store.status() == 2


def test_put_with_a_dead_lease_changes_nothing(store) -> None:
    lease = store.grant(60)
    store.revoke(lease)
    with pytest.raises(LeaseNotFound):
        store.txn([], [Put("a", b"1"), Put("b", b"2", lease)])
    with pytest.raises(LeaseNotFound):
        store.put("c", b"3", lease=999)
    assert store.status() == 0
    assert store.get("a") is None


def test_lease_ids_are_never_reused(store) -> None:
    first = store.grant(60)
    store.revoke(first)
    assert store.grant(60) > first > 0
    with pytest.raises(ValueError, match="positive"):
        store.grant(0)


# -- concurrency ---------------------------------------------------------------------------

KEYS = [f"alloc/{i}" for i in range(500)]


def claim_all(store: SQLiteStore, owner: str, keys: list[str]) -> int:
    """Create-if-absent every key; how many this caller created."""
    return sum(store.txn([Compare.absent(k)], [Put(k, owner.encode())]).succeeded for k in keys)


def claim_in_child(store: SQLiteStore, index: int, barrier, results) -> None:
    barrier.wait(timeout=20)
    results.put(claim_all(store, f"p{index}", KEYS[index:] + KEYS[:index]))


def test_sixteen_processes_create_each_key_exactly_once(store) -> None:
    store.status()  # children inherit an open connection: they must not use it
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(16), ctx.Queue()
    procs = [
        ctx.Process(target=claim_in_child, args=(store, i, barrier, results)) for i in range(16)
    ]
    for p in procs:
        p.start()
    try:
        created = [results.get(timeout=30) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    assert sum(created) == 500
    kvs = store.range("alloc/", prefix=True).kvs
    assert len(kvs) == 500
    assert {kv.version for kv in kvs} == {1}
    assert store.status() == 500
    assert len({kv.create_revision for kv in kvs}) == 500


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
    assert len(store.range("alloc/", prefix=True).kvs) == 500


def test_close_then_reuse_reopens(store) -> None:
    store.put("a", b"1")
    store.close()
    assert store.get("a").value == b"1"


# -- failures --------------------------------------------------------------------------------


def test_unopenable_path_is_unavailable(tmp_path) -> None:
    (tmp_path / "file").write_text("not a directory")
    store = SQLiteStore(str(tmp_path / "file" / "netplug.db"))
    with pytest.raises(StoreUnavailable, match=r"file/netplug\.db.*directory exists"):
        store.status()
    with pytest.raises(StoreUnavailable):
        store.put("a", b"1")
    with pytest.raises(StoreUnavailable):
        next(store.watch("", 0, timeout=0.05))


def test_not_a_database_is_unavailable(tmp_path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"x" * 4096)
    with pytest.raises(StoreUnavailable, match="integrity"):
        SQLiteStore(str(bad)).status()


def test_write_lock_held_too_long_is_unavailable(store, path, monkeypatch) -> None:
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT", 0.1)
    store.status()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="write lock"):
            store.put("a", b"1")
        assert store.get("a") is None  # readers are not blocked by a writer
    finally:
        holder.close()
    assert store.put("a", b"1") == 1
