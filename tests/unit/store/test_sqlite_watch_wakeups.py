"""An SQLite watch wakes up for commits, not on a clock: idle, it runs almost no
query (a 10 ms poll of the database cost every idle agent about 1 % of a core),
and it still sees another connection's commit within milliseconds, with inotify
and with the stat-polling fallback."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netplug.ipam.store import file_changes
from netplug.ipam.store import sqlite as sqlite_module
from netplug.ipam.store.sqlite import SWEEP_INTERVAL, SQLiteStore

IDLE_S = 1.5


@pytest.fixture(params=["inotify", "stat-poll"])
def store(request, tmp_path: Path, monkeypatch) -> Iterator[SQLiteStore]:
    if request.param == "stat-poll":
        monkeypatch.setattr(file_changes, "Inotify", _no_inotify)
    s = SQLiteStore(str(tmp_path / "netplug.db"))
    try:
        yield s
    finally:
        s.close()


def _no_inotify(directory: str, names: frozenset[str]) -> file_changes.Inotify:
    raise OSError(24, "Too many open files (as when the per-user inotify limit is reached)")


def _trace_statements(store: SQLiteStore, monkeypatch) -> list[str]:
    """Every statement the store's connections opened from now on run (SQLite's trace)."""
    statements: list[str] = []
    open_connection = store._open

    def traced():
        conn = open_connection()
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(store, "_open", traced)
    return statements


def _drain(events: Iterator[list], stop: threading.Event, seen: list) -> threading.Thread:
    """Consume a watch in a thread, stamping each event's arrival."""

    def run() -> None:
        for batch in events:
            seen.extend((time.monotonic(), e.kv.key) for e in batch)
            if stop.is_set():
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_quiet(statements: list[str], quiet: float = 0.1, bound: float = 5.0) -> None:
    """Until some statement ran and none followed for ``quiet`` seconds (at most ``bound``)."""
    deadline, count = time.monotonic() + bound, -1
    while (not statements or len(statements) != count) and time.monotonic() < deadline:
        count = len(statements)
        time.sleep(quiet)


def test_an_idle_watch_runs_no_query_between_sweeps(store, monkeypatch) -> None:
    store.put("k/a", b"1")
    statements = _trace_statements(store, monkeypatch)
    stop, seen = threading.Event(), []
    thread = _drain(store.watch("k/", 0, timeout=0.2), stop, seen)
    try:
        _wait_quiet(statements)  # opened, first look done (however late its thread ran)
        before = len(statements)
        time.sleep(IDLE_S)
        idle = statements[before:]
    finally:
        stop.set()
        thread.join(timeout=5)
    # A look (data_version) and a lease check every SWEEP_INTERVAL; a 10 ms poll ran 150.
    assert len(idle) <= 2 * IDLE_S / SWEEP_INTERVAL + 2, idle
    assert seen == []


def test_a_watch_sees_another_connections_commit_within_milliseconds(store, tmp_path) -> None:
    writer = SQLiteStore(str(tmp_path / "netplug.db"))  # its own connections, as another process
    stop, seen = threading.Event(), []
    thread = _drain(store.watch("k/", 0, timeout=0.2), stop, seen)
    delays = []
    try:
        time.sleep(0.3)
        for i in range(30):
            writer.put(f"k/{i}", b"v")
            written = time.monotonic()
            deadline = written + 2.0
            while not any(key == f"k/{i}" for _, key in seen) and time.monotonic() < deadline:
                time.sleep(0.001)
            arrived = next((at for at, key in seen if key == f"k/{i}"), None)
            assert arrived is not None, f"k/{i} not seen within 2 s"
            delays.append(arrived - written)
            time.sleep(0.05)  # let the watch go idle again
    finally:
        stop.set()
        thread.join(timeout=5)
        writer.close()
    # The bar the watch had with its 10 ms poll; a loaded machine may stretch one sample.
    assert statistics.median(delays) < 0.02, delays
    assert max(delays) < 0.45, delays  # the 0.5 s safety net did not have to find it


def test_a_watch_still_sees_a_lease_expire_with_no_writer(tmp_path) -> None:
    """An expired lease writes nothing until swept: the watch's periodic look sweeps."""
    path = str(tmp_path / "netplug.db")
    owner = SQLiteStore(path)
    watcher = SQLiteStore(path)
    try:
        lease = owner.grant(0.3)
        owner.put("host/a", b"up", lease=lease)
        owner.close()
        events = watcher.watch("host/", watcher.status() + 1, timeout=0.1)
        deadline = time.monotonic() + 0.3 + 2 * SWEEP_INTERVAL + 1.0
        got = []
        while not got and time.monotonic() < deadline:
            got = next(events)
        assert [(e.type, e.kv.key) for e in got] == [("delete", "host/a")]
    finally:
        watcher.close()


def test_a_checkpointed_wal_shrinks_so_that_commits_do_not_all_checkpoint(
    tmp_path, monkeypatch
) -> None:
    """The writer checkpoints once the WAL file passes CHECKPOINT_BYTES; a file
    that kept its size made every later commit checkpoint (and wake every watch)."""
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_BYTES", 256 * 1024)
    store = SQLiteStore(str(tmp_path / "netplug.db"))
    statements = _trace_statements(store, monkeypatch)
    try:
        for i in range(400):
            store.put(f"k/{i % 50}", b"v" * 500)
    finally:
        store.close()
    checkpoints = sum("wal_checkpoint" in s for s in statements)
    # About 16 KiB of WAL per commit (4 pages): a checkpoint every ~16 commits.
    assert 1 <= checkpoints <= 400 // 4, checkpoints
