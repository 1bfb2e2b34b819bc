"""What only the SQLite store does: its file, WAL locking, compaction by history,
lazy lease sweeping, many processes on one file, and failure to open.
The backend-neutral contract is in test_store_contract.py."""

from __future__ import annotations

import multiprocessing
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from store_testing import KEYS, claim_all, collect, results_of_children, summary, wait_until

from netplug.ipam.store import sqlite as sqlite_module
from netplug.ipam.store.base import (
    Compacted,
    Compare,
    Put,
    StoreCorrupt,
    StoreReset,
    StoreUnavailable,
)
from netplug.ipam.store.sqlite import SQLiteStore

import processes


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


def test_new_store_creates_its_directory_and_starts_at_revision_zero(store, path) -> None:
    assert store.status() == 0
    assert Path(path).is_file()
    assert store.url == f"sqlite://{path}"


def test_revision_survives_reopening(store, path) -> None:
    store.put("a", b"1")
    other = SQLiteStore(path)
    try:
        assert other.status() == 1
        assert other.get("a") is not None
    finally:
        other.close()


def test_watch_never_splits_a_revision(store, monkeypatch) -> None:
    monkeypatch.setattr(sqlite_module, "WATCH_BATCH", 3)
    store.txn([], [Put(f"k/{i}", b"v") for i in range(5)])
    store.put("k/z", b"v")
    events = store.watch("k/", 1, timeout=0.05)
    assert [e.kv.mod_revision for e in next(events)] == [1] * 5
    assert summary(next(events)) == [("put", "k/z", 2)]


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


def test_lease_ids_grow(store) -> None:
    first = store.grant(60)
    store.revoke(first)
    assert store.grant(60) > first > 0


# -- many processes on one file --------------------------------------------------------------


def claim_in_child(store: SQLiteStore, index: int, barrier, results) -> None:
    barrier.wait(timeout=20)
    results.put(claim_all(store, f"p{index}", KEYS[index:] + KEYS[:index]))


def test_sixteen_processes_create_each_key_exactly_once(store, monkeypatch) -> None:
    # SQLite's busy handler lets the running writers win again and again: on a
    # loaded 2-core machine one of 16 may wait past the 3 s a CNI call allows.
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT", 30.0)
    store.status()  # children inherit an open connection: they must not use it
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(16), ctx.Queue()
    arguments = [(store, i, barrier, results) for i in range(16)]
    created = results_of_children(ctx, claim_in_child, arguments, results)
    assert sum(created) == 500
    kvs = store.range("alloc/", prefix=True).kvs
    assert len(kvs) == 500
    assert {kv.version for kv in kvs} == {1}
    assert store.status() == 500
    assert len({kv.create_revision for kv in kvs}) == 500


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


def test_not_a_database_is_corrupt_not_transient(tmp_path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"x" * 4096)
    with pytest.raises(StoreCorrupt, match=r"not a database.*move the file aside"):
        SQLiteStore(str(bad)).status()


def test_malformed_image_is_corrupt(store, path) -> None:
    for i in range(200):
        store.put(f"/k/{i:03}", b"v" * 200)
    store.close()  # checkpoints every page into the file
    with open(path, "r+b") as f:  # keep page 1 (the header), ruin the others
        f.seek(4096)
        f.write(b"\xff" * (Path(path).stat().st_size - 4096))
    with pytest.raises(StoreCorrupt, match="malformed"):
        SQLiteStore(path).range("/k/", prefix=True)


def test_emptied_file_is_let_go_of_without_writing_the_old_pages_into_it(store, path) -> None:
    for i in range(50):
        store.put(f"/k/{i:02}", b"v" * 200)
    watch = store.watch("/k/", 0, timeout=0.05)
    assert next(watch) == []
    Path(path).write_bytes(b"")  # truncated under two open connections
    other = SQLiteStore(path)  # another process, while this one holds the old journal
    with pytest.raises(StoreReset, match=r"empty but its journal.*netplugctl recover"):
        other.status()
    with pytest.raises(StoreReset, match="was emptied while this process had it open"):
        store.put("/k/new", b"x")
    with pytest.raises(StoreReset):
        next(watch)
    assert not Path(path + "-wal").exists()
    # The next call opens the emptied file as a new, empty store: none of the old
    # pages came back (a checkpoint on close would have written them into it).
    assert store.range("/k/", prefix=True).kvs == []
    assert other.status() == 0
    other.close()


def test_replaced_file_is_let_go_of_and_the_new_one_used(store, path, tmp_path) -> None:
    store.put("/k/old", b"1")
    replacement = SQLiteStore(str(tmp_path / "other.db"))
    replacement.put("/k/new", b"2")
    replacement.close()
    Path(tmp_path / "other.db").replace(path)
    with pytest.raises(StoreReset, match="replaced by another file"):
        store.get("/k/old")
    assert [kv.key for kv in store.range("/k/", prefix=True).kvs] == ["/k/new"]


def _in_new_thread(call):
    """``call()``'s result or exception, run on a thread with no connection yet."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as e:  # handed back to the test
            outcome.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    return outcome[0]


def _wal_holds_the_header(store: SQLiteStore, path: str) -> None:
    for i in range(20):
        store.put(f"/k/{i:02}", b"v" * 200)
    assert Path(path + "-wal").stat().st_size > 0  # not checkpointed: page 1 is there


@pytest.mark.parametrize("same_store", [True, False], ids=["same-store", "another-store"])
def test_garbage_replacing_a_file_is_corrupt_though_the_old_journal_holds_its_pages(
    store, path, tmp_path, same_store
) -> None:
    """A new connection to the garbage file read page 1 from the old file's WAL
    and answered with the old data (an agent's ADD succeeded on a damaged store)."""
    _wal_holds_the_header(store, path)
    (tmp_path / "bad.db").write_bytes(b"\x8f" * 8192)
    (tmp_path / "bad.db").replace(path)
    reader = store if same_store else SQLiteStore(path)
    try:
        outcome = _in_new_thread(lambda: reader.range("/k/", prefix=True))
        assert isinstance(outcome, StoreCorrupt), outcome
        assert "not a database" in str(outcome)
    finally:
        if not same_store:
            reader.close()


def test_a_file_put_in_place_under_a_live_journal_is_read_without_its_pages(
    store, path, tmp_path
) -> None:
    """A good replacement (a restored copy) opened by a thread with no connection
    yet: it answers from the new file, never from the old file's journal."""
    _wal_holds_the_header(store, path)
    restored = SQLiteStore(str(tmp_path / "restored.db"))
    restored.put("/k/restored", b"1")
    restored.close()
    (tmp_path / "restored.db").replace(path)
    outcome = _in_new_thread(lambda: [kv.key for kv in store.range("/k/", prefix=True).kvs])
    assert outcome == ["/k/restored"]


def range_in_child(store: SQLiteStore, results) -> None:
    try:
        results.put([kv.key for kv in store.range("/k/", prefix=True).kvs])
    except Exception as e:  # handed back to the test
        results.put(f"{type(e).__name__}: {e}")


def test_a_forked_child_reads_the_header_of_a_file_its_parent_has_open(store, path) -> None:
    """Guards fc5a3cc's other half. Garbage written over the file in place (the
    same inode) while the old WAL holds its pages: a forked child, which inherits
    the parent's connections but not their locks, must read the header itself.
    The inherited connections made it skip that read (they counted as its own),
    and it answered the old keys from the journal. Checked to fail with
    ``_held_in_process`` not comparing the pid."""
    _wal_holds_the_header(store, path)
    with open(path, "r+b") as f:
        f.write(b"\x8f" * 8192)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    [outcome] = results_of_children(ctx, range_in_child, [(store, results)], results)
    assert str(outcome).startswith("StoreCorrupt") and "not a database" in outcome, outcome


# Another process that commits to the store at argv[1] and keeps its connection (so
# nothing checkpoints the commit out of the WAL) until its stdin closes.
WRITER = """\
import sys
from netplug.ipam.store.sqlite import SQLiteStore
SQLiteStore(sys.argv[1]).put("/k/written", b"1")
print("committed", flush=True)
sys.stdin.read()
"""


@contextmanager
def writer_process() -> Iterator[Callable[[str], None]]:
    """``commit(path)`` runs ``WRITER`` on ``path``, returning once it committed;
    the process is killed afterwards (no checkpoint on its way out)."""
    with processes.announcing() as start:
        # Run beside the store, not in a checkout whose source would shadow the install.
        yield lambda path: start(
            [sys.executable, "-c", WRITER, path], "committed", cwd=Path(path).parent
        )


def test_a_file_replaced_while_a_connection_opens_keeps_the_new_files_journal(
    store, path, tmp_path, monkeypatch
) -> None:
    """Guards fc5a3cc. The file is replaced after ``_open`` read its identity and
    before it connected, and another process commits to the new file (its WAL
    holds the commit). The connection had the new file but was registered under
    the old one's inode: its first use let it go as stale, removing the journals
    it had found, the new file's: that process's commit was lost. Checked to
    fail with the fix's six lines in ``_open`` removed (the key was gone)."""
    replacement = tmp_path / "new.db"
    for where, key in ((path, "/k/old"), (str(replacement), "/k/restored")):
        made = SQLiteStore(where)
        made.put(key, b"1")
        made.close()
    connect = store._connect  # the fixture's store has no connection yet
    with writer_process() as commit:

        def replaced_then_connect() -> sqlite_module._Connection:
            if replacement.exists():  # the first connection only
                replacement.replace(path)
                commit(path)
            return connect()

        monkeypatch.setattr(store, "_connect", replaced_then_connect)
        with pytest.raises(StoreReset):
            store.get("/k/old")
        keys = [kv.key for kv in store.range("/k/", prefix=True).kvs]
    assert keys == ["/k/restored", "/k/written"]


def test_threads_using_the_store_when_the_file_is_emptied_each_get_reset(
    store, path, monkeypatch
) -> None:
    """No thread's connection is closed under its running statement (which gave
    "closed database", code 11, or a crash): every thread meets StoreReset, and
    nothing of the old file is written into the emptied one. (Without the
    writers' checkpoint: one running at the very moment of the truncation
    writes into the file whatever anyone does.)"""
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_BYTES", 1 << 40)
    for i in range(50):
        store.put(f"/k/{i:02}", b"v" * 200)
    outcomes: dict[str, list[str]] = {}
    idle_may_go, stop = threading.Event(), threading.Event()
    started = threading.Semaphore(0)  # one release per thread that has its connection

    def busy(name: str) -> None:
        deadline = time.monotonic() + 10
        first = True
        while time.monotonic() < deadline and not stop.is_set():
            try:
                if name.startswith("w"):
                    store.put(f"/t/{name}", b"x")
                else:
                    store.range("/k/", prefix=True)
            except Exception as e:  # what each thread met is the point
                outcomes.setdefault(name, []).append(type(e).__name__ + ": " + str(e))
                return
            if first and name != "idle":
                started.release()
                first = False

    def idle(name: str) -> None:
        store.get("/k/00")  # opens this thread's connection, then keeps it unused
        started.release()
        idle_may_go.wait(10)
        busy(name)

    names = [f"{kind}{i}" for i in range(4) for kind in "rw"]
    threads = [threading.Thread(target=busy, args=(name,)) for name in names]
    threads.append(threading.Thread(target=idle, args=("idle",)))
    for t in threads:
        t.start()
    try:
        # Every thread has its connection first: one opened on the emptied file
        # would rightly make a new database there.
        assert all(started.acquire(timeout=10) for _ in threads)
        time.sleep(0.05)
        Path(path).write_bytes(b"")
        wait_until(lambda: len(outcomes) == len(threads) - 1, timeout=10)
        idle_may_go.set()
        wait_until(lambda: len(outcomes) == len(threads), timeout=10)
    finally:
        stop.set()
        idle_may_go.set()
        for t in threads:
            t.join(10)
    assert {met[0].split(":")[0] for met in outcomes.values()} == {"StoreReset"}, outcomes
    assert Path(path).stat().st_size == 0
    assert not Path(path + "-wal").exists()
    with pytest.raises(StoreReset):  # this thread's connection was stale too
        store.get("/k/00")
    assert store.range("/", prefix=True).kvs == []  # the next call: a new, empty store


def test_a_failure_letting_go_of_one_connection_still_resets(store, path, monkeypatch) -> None:
    """One connection that cannot be closed without a checkpoint is kept open for
    good; the others are closed, the journals removed, and the caller gets
    StoreReset (not the failure)."""
    store.put("/k/a", b"1")
    other = threading.Thread(target=store.get, args=("/k/a",))  # a second connection
    other.start()
    other.join(5)
    real, calls = sqlite_module._skip_checkpoint_on_close, []

    def flaky(conn, where):
        calls.append(conn)
        if len(calls) == 1:
            raise OSError("no such symbol")
        return real(conn, where)

    monkeypatch.setattr(sqlite_module, "_skip_checkpoint_on_close", flaky)
    monkeypatch.setattr(sqlite_module, "_KEPT_OPEN", [])
    Path(path).write_bytes(b"")
    with pytest.raises(StoreReset, match="was emptied"):
        store.get("/k/a")
    assert len(calls) == 2
    assert [calls[0]] == sqlite_module._KEPT_OPEN
    assert not Path(path + "-wal").exists() and not Path(path + "-shm").exists()
    with pytest.raises(StoreReset, match="could not be closed safely: restart"):
        store.get("/k/a")  # a new connection would share the kept one's WAL index
    assert Path(path).stat().st_size == 0


@pytest.mark.skipif(hasattr(sqlite3.Connection, "setconfig"), reason="ctypes path: Python < 3.12")
def test_checkpoint_is_skipped_only_on_a_handle_that_has_the_file_open(tmp_path) -> None:
    path = str(tmp_path / "netplug.db")
    conn = sqlite3.connect(path)
    try:
        assert not sqlite_module._skip_checkpoint_on_close(conn, path + ".other")
        assert sqlite_module._skip_checkpoint_on_close(conn, str(Path(path).resolve()))
    finally:
        conn.close()
    assert not sqlite_module._skip_checkpoint_on_close(conn, path)  # closed: no handle


def test_closing_a_watch_on_an_emptied_file_writes_nothing_into_it(path) -> None:
    writer, watcher = SQLiteStore(path), SQLiteStore(path)
    for i in range(50):
        writer.put(f"/k/{i:02}", b"v" * 200)
    watch = watcher.watch("/k/", 0, timeout=0.05)
    assert next(watch) == []
    writer.close()  # not the last connection: no checkpoint, the WAL keeps the pages
    assert Path(path + "-wal").stat().st_size > 0
    Path(path).write_bytes(b"")
    watch.close()  # the last connection: a plain close would checkpoint into the file
    assert Path(path).stat().st_size == 0
    assert not Path(path + "-wal").exists()
    watcher.close()


def test_writers_checkpoint_but_never_into_a_file_that_changed(store, path, monkeypatch) -> None:
    """SQLite's checkpoint after commit is off: it ran even when the file had been
    emptied since the call looked at it (most of the old pages came back)."""
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_BYTES", 1)  # after every write
    for i in range(50):
        store.put(f"/k/{i:02}", b"v" * 200)
    assert Path(path).stat().st_size > 4 * 4096  # the pages reached the file
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_BYTES", 1 << 40)  # not until told
    store.put("/k/late", b"x")  # pages the file does not have yet, in the WAL
    conn = store._local.conn  # this thread's, idle
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    Path(path).write_bytes(b"")  # emptied after the commit looked at the file
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_BYTES", 1)
    store._checkpoint_if_due(conn)  # what that commit's checkpoint does
    assert Path(path).stat().st_size == 0


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
