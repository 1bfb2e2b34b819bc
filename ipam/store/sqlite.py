"""The embedded store: etcd v3 semantics in one SQLite file (WAL mode).

Every process and thread on the machine may open the same file at once; all
of them see one key space and one revision.

Schema (``PRAGMA user_version`` 1):

- ``meta``: one row, the global ``revision`` and ``compacted``, the newest
  revision whose events are gone;
- ``kv``: live keys with create/mod revision, version and lease, as etcd;
- ``events``: one row per changed key, keyed by (revision, seq), carrying the
  key's new state and its previous value, which is what ``watch`` replays;
- ``leases``: id (never reused), TTL and expiry in wall-clock seconds
  (``time.time()``), so that every process agrees on when a lease ends.

Locking: every write runs in ``BEGIN IMMEDIATE``, so the compare and the swap
of a transaction hold the database's one write lock across processes; readers
use WAL snapshots and never block writers. Each thread has its own connection
(a connection is not safe for concurrent use) and each watch has its own too,
so that ``PRAGMA data_version`` tells it when *another* connection committed.
A watch looks only after the file or its WAL changed (inotify, see
``file_changes``), once the writes stopped (a commit's WAL frames are one
look, not one each), and every SWEEP_INTERVAL: an idle watch runs two cheap
statements a SWEEP_INTERVAL, not one every 10 ms.

Compaction: a writer keeps the events of the newest ``history`` revisions
(100,000 by default) and drops older ones every ``history // 100`` revisions;
a watch that starts at or below the dropped range gets ``Compacted``.

A file emptied or replaced under open connections: each connection keeps
answering from its cache and journal, and closing it would checkpoint the old
file's pages into the new one. So every use of a connection first compares the
file at ``path`` with the one it opened (inode, a size that holds a header).
The thread that finds a difference starts a new *generation*: it lets go of
its own connection (closed without that checkpoint, journals removed), and of
every other connection that no thread is using right now (each holds its
``in_use`` lock while a thread runs statements on it); a connection in use is
only marked stale, and its thread lets go of it when its statement ends. Every
thread then gets StoreReset once, on its next use (or at the end of the call
that was running), so nothing more is written through an old connection, and
no connection is closed under a running statement (Python < 3.12 has no lock
of its own around one). Until every stale connection is gone (a statement's
time), no new one is opened in this process: SQLite shares a file's locks and
WAL index between the connections of a process, and a new one would inherit
the old file's. SQLite's checkpoint after a commit is off: it would run however
the file changed since the call looked; a writer checkpoints itself once the
WAL passes CHECKPOINT_BYTES, after checking the file (a checkpoint running at
the very moment the file is emptied still writes into it: no process can help
that). The next
call opens the new file, and the host's identity check (``netplug.ipam.identity``)
decides whether it may be used.

SQLite reads a page from the WAL when the WAL holds it, so a new connection to a
file put in place beside the old file's WAL would answer with the old pages. A
thread that opens its connection first lets go of its process's connections to
an old file (which removes that file's journals), and reads the file's header
itself, unless a connection of this process has that very file open (closing a
descriptor of it would drop that connection's POSIX locks): garbage is
StoreCorrupt, never the old file's data.

Closing without the checkpoint needs ``SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE``:
``Connection.setconfig`` on Python >= 3.12; on CPython 3.10 and 3.11 it is set
through ctypes on the handle found in the connection object, used only when
SQLite confirms that the handle has this store's file open. Where neither is
possible, the connection is never closed (a reference is leaked on purpose, so
that not even interpreter shutdown closes it; the process's exit drops its
locks without a checkpoint), and this process refuses to reopen the same file
(it would share the old one's WAL index): it has to be restarted.

Lease sweeping: expired leases are revoked lazily, with delete events at their
own revision: at the start of every writing transaction, and at most every
``SWEEP_INTERVAL`` seconds by readers and watchers, so that a watcher sees an
expired lease's deletes within about a second even when nobody writes. Until
then, reads filter out keys of expired leases.
"""

from __future__ import annotations

import functools
import logging
import operator
import os
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from . import file_changes
from .base import (
    Compacted,
    Compare,
    Delete,
    Event,
    Get,
    KeyValue,
    LeaseNotFound,
    Op,
    Put,
    RangeResult,
    StoreCorrupt,
    StoreReset,
    StoreUnavailable,
    TxnResult,
    prefix_end,
)

SCHEMA_VERSION = 1
BUSY_TIMEOUT = 3.0  # seconds a writer waits for the write lock before StoreUnavailable
WRITE_LOCK_TIMEOUT = 5.0  # seconds a thread waits for the other writing threads of its process
SWEEP_INTERVAL = 0.5  # seconds between expired-lease checks by readers and watchers
POLL_INTERVAL = 0.01  # seconds between a watch's looks at the files where inotify is missing
COMMIT_SETTLE = 0.2  # seconds a watch polls for a commit whose WAL write it saw, at POLL_INTERVAL
# After a change to the files, a watch waits until they have been quiet this long
# (a commit's frames are written back to back, then published in the shared
# index at once), at most COMMIT_QUIET_MAX, and looks once (``Changes.quiet``).
COMMIT_QUIET, COMMIT_QUIET_MAX = 0.0005, 0.005
DEFAULT_HISTORY = 100_000  # revisions of events kept for watchers
WATCH_BATCH = 1000  # events per watch query (a revision is never split)
HEADER_SIZE = 100  # bytes of SQLite's file header: a database file is never shorter
CHECKPOINT_BYTES = 4 << 20  # WAL size after which a writer checkpoints (SQLite's default)
JOURNALS = ("-wal", "-shm")  # the files WAL mode keeps beside the database
# sqlite3 primary result codes of a damaged file (sqlite3.h): not worth retrying.
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26
SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE = 1006  # sqlite3.h; Python < 3.12 lacks the constant

log = logging.getLogger(__name__)

# Connections that could not be closed without a checkpoint: kept open for good.
_KEPT_OPEN: list[_Connection] = []
# Every open connection of this process, of every store, and the lock under which
# one is opened: see _check_header.
_OPEN: weakref.WeakSet[_Connection] = weakref.WeakSet()
_OPENING = threading.Lock()
SQLITE_MAGIC = b"SQLite format 3\0"  # the first 16 bytes of every database file

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0),"
    " revision INTEGER NOT NULL, compacted INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta VALUES (0, 0, 0)",
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL,"
    " create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, version INTEGER NOT NULL,"
    " lease INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease != 0",
    "CREATE TABLE IF NOT EXISTS events (revision INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " key TEXT NOT NULL, deleted INTEGER NOT NULL, value BLOB NOT NULL,"
    " create_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL,"
    " prev_value BLOB, PRIMARY KEY (revision, seq)) WITHOUT ROWID",
    # AUTOINCREMENT: a revoked lease's id is never handed out again, so a stale
    # keepalive cannot renew somebody else's lease.
    "CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " ttl REAL NOT NULL, expiry REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS leases_expiry ON leases (expiry)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

_KV_COLUMNS = "key, value, create_rev, mod_rev, version, lease"
_EVENT_COLUMNS = "revision, seq, key, deleted, value, create_rev, version, lease, prev_value"
# A key of an expired lease is gone for readers even before a writer sweeps it.
_LIVE = "(lease = 0 OR EXISTS (SELECT 1 FROM leases WHERE id = kv.lease AND expiry > ?))"

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_TARGETS = {
    "create": "create_revision",
    "mod": "mod_revision",
    "version": "version",
    "value": "value",
}

F = TypeVar("F", bound=Callable[..., Any])


def _key_range(key: str, prefix: bool) -> tuple[str, tuple[str, ...]]:
    """SQL condition and parameters selecting one key or every key under a prefix."""
    if not prefix:
        return "key = ?", (key,)
    if not key:
        return "key >= ?", (key,)
    return "key >= ? AND key < ?", (key, prefix_end(key))


def _holds(compare: Compare, kv: KeyValue | None) -> bool:
    """Whether ``compare`` holds for ``kv``; a missing key is 0 / b"" as in etcd."""
    try:
        op, attr = _OPS[compare.op], _TARGETS[compare.target]
    except KeyError:
        raise ValueError(
            f"bad compare {compare!r}: target must be one of "
            f"{sorted(_TARGETS)} and op one of {sorted(_OPS)}"
        ) from None
    actual = getattr(kv, attr) if kv else (b"" if attr == "value" else 0)
    return op(actual, compare.value)


def _writes(ops: Sequence[Op]) -> bool:
    return any(not isinstance(op, Get) for op in ops)


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL mode (a no-op once it is), retrying for BUSY_TIMEOUT.

    Processes that open a new file at once race to convert it, and the loser
    gets "database is locked" at once: SQLite skips the busy handler there.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(0.005)
    if mode != "wal":
        raise sqlite3.OperationalError(f"the file cannot use WAL mode (journal mode {mode})")


def _prepare(conn: sqlite3.Connection) -> None:
    """WAL mode, our checkpointing, and the schema on a new file."""
    _enable_wal(conn)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # ours: _checkpoint_if_due
    # The WAL's size is how _checkpoint_if_due tells it is due: the file has to
    # shrink once checkpointed (SQLite reuses it from the start, at full size),
    # else every commit after the first 4 MiB checkpointed, and each
    # checkpoint woke every watch.
    conn.execute("PRAGMA journal_size_limit = 0")
    if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("COMMIT")


def _next_change(changes: file_changes.Changes, timeout: float) -> bool:
    """Whether the files changed within ``timeout`` s; if so, once the writes stopped."""
    if not changes.wait(timeout):
        return False
    changes.quiet(COMMIT_QUIET, COMMIT_QUIET_MAX)
    return True


def _event(row: tuple[Any, ...]) -> Event:
    rev, _seq, key, deleted, value, create, version, lease, prev = row
    kv = KeyValue(key, value, create, rev, version, lease)
    return Event("delete" if deleted else "put", kv, prev)


class _Txn:
    """One transaction's view of the database and the writes of its one new revision.

    Lives inside an open SQLite transaction; ``finish`` bumps the revision only
    when something was written.
    """

    def __init__(self, conn: sqlite3.Connection, now: float, history: int) -> None:
        self.conn, self.now, self._history = conn, now, history
        self.revision, self.compacted = conn.execute(
            "SELECT revision, compacted FROM meta"
        ).fetchone()
        self._seq = 0

    def select(self, key: str, prefix: bool, limit: int) -> list[KeyValue]:
        where, params = _key_range(key, prefix)
        rows = self.conn.execute(
            f"SELECT {_KV_COLUMNS} FROM kv WHERE {where} AND {_LIVE} ORDER BY key LIMIT ?",
            (*params, self.now, limit or -1),
        )
        return [KeyValue(*row) for row in rows]

    def one(self, key: str) -> KeyValue | None:
        kvs = self.select(key, False, 1)
        return kvs[0] if kvs else None

    def apply(self, op: Op) -> object:
        """Run one op; its response as documented on ``TxnResult``."""
        match op:
            case Put():
                return self.put(op.key, op.value, op.lease)
            case Delete():
                return self.delete(op.key, op.prefix)
            case Get():
                return self.select(op.key, op.prefix, 0)
        raise TypeError(f"not a store op: {op!r}")

    def put(self, key: str, value: bytes, lease: int) -> None:
        conn, rev = self.conn, self.revision + 1
        # Expired leases were swept when this write transaction began.
        if lease and conn.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone() is None:
            raise LeaseNotFound(f"lease {lease} expired or was revoked: grant a new one")
        row = conn.execute(
            "SELECT value, create_rev, version FROM kv WHERE key = ?", (key,)
        ).fetchone()
        prev, create, version = (row[0], row[1], row[2] + 1) if row else (None, rev, 1)
        conn.execute(
            "INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?, ?, ?)",
            (key, value, create, rev, version, lease),
        )
        self._record(key, False, value, create, version, lease, prev)

    def delete(self, key: str, prefix: bool) -> int:
        return self._delete_where(*_key_range(key, prefix))

    def revoke(self, lease: int) -> None:
        # "lease != 0" lets SQLite use the partial index kv_lease for a bound parameter.
        self._delete_where("lease = ? AND lease != 0", (lease,))
        self.conn.execute("DELETE FROM leases WHERE id = ?", (lease,))

    def grant(self, ttl: float) -> int:
        return (
            self.conn.execute(
                "INSERT INTO leases (ttl, expiry) VALUES (?, ?)", (ttl, self.now + ttl)
            ).lastrowid
            or 0
        )

    def keepalive(self, lease: int) -> float:
        row = self.conn.execute("SELECT ttl FROM leases WHERE id = ?", (lease,)).fetchone()
        if row is None:
            raise LeaseNotFound(f"lease {lease} expired or was revoked: grant a new one")
        self.conn.execute("UPDATE leases SET expiry = ? WHERE id = ?", (self.now + row[0], lease))
        return float(row[0])

    def finish(self) -> None:
        """Publish the new revision if anything changed, compacting history now and then."""
        if not self._seq:
            return
        self.revision += 1
        self.conn.execute("UPDATE meta SET revision = ?", (self.revision,))
        floor = self.revision - self._history
        if floor > 0 and self.revision % max(1, self._history // 100) == 0:
            self.conn.execute("DELETE FROM events WHERE revision <= ?", (floor,))
            self.conn.execute("UPDATE meta SET compacted = ?", (floor,))

    def _delete_where(self, where: str, params: tuple[object, ...]) -> int:
        rows = self.conn.execute(f"SELECT key, value FROM kv WHERE {where}", params).fetchall()
        if rows:
            self.conn.execute(f"DELETE FROM kv WHERE {where}", params)
        for key, value in rows:
            self._record(key, True, b"", 0, 0, 0, value)
        return len(rows)

    def _record(
        self,
        key: str,
        deleted: bool,
        value: bytes,
        create: int,
        version: int,
        lease: int,
        prev: bytes | None,
    ) -> None:
        self._seq += 1
        self.conn.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (self.revision + 1, self._seq, key, deleted, value, create, version, lease, prev),
        )


class _Connection(sqlite3.Connection):
    """A connection that remembers its process and the files it opened (as
    (device, inode)), and that ``SQLiteStore.close`` can track without keeping
    dead threads' ones alive (``sqlite3.Connection`` takes no weak references)."""

    pid = 0
    file_id: tuple[int, int] = (0, 0)
    journals: tuple[tuple[str, tuple[int, int]], ...] = ()  # (suffix, file id)
    generation = 0  # the store's generation when it was opened (stale once it moves on)
    retired = False  # let go of: closed without checkpoint, or kept open for good
    in_use: threading.Lock  # held while a thread runs statements on it


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _file_problem(path: str, file_id: tuple[int, int]) -> str:
    """How the file at ``path`` differs from the one opened as ``file_id``; "" if not."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "was deleted"
    if (st.st_dev, st.st_ino) != file_id:
        return "was replaced by another file"
    if st.st_size < HEADER_SIZE:
        return "was emptied"
    return ""


def _emptied_under_others(path: str) -> bool:
    """An empty database beside a WAL journal that holds data: the file was
    emptied while some process (a netplugd) had it open. A new file is never
    like that: SQLite writes its header before the journal exists."""
    try:
        return os.stat(path).st_size == 0 and os.stat(path + "-wal").st_size > 0
    except FileNotFoundError:
        return False


def _header_problem(path: str) -> str:
    """Why the file at ``path`` cannot be a database ("" if it may be one).

    SQLite reads a page from the WAL journal when the journal holds it, and a
    file replaced beside the old one's journal would answer with the old pages
    (page 1, the header, included) instead of failing: the header is read here.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return ""
    if head and head != SQLITE_MAGIC[: len(head)]:
        return "file is not a database"
    return ""


def _held_in_process(file_id: tuple[int, int] | None) -> bool:
    """An open connection of this process (kept-open ones included) has the file
    ``file_id``: opening and closing it here would drop that connection's POSIX
    locks (they belong to the process and the inode, not to a descriptor)."""
    pid = os.getpid()  # a forked child inherits connections, not their locks
    return any(c.file_id == file_id and c.pid == pid for c in _OPEN)


def _skip_checkpoint_on_close(conn: sqlite3.Connection, path: str) -> bool:
    """Make closing ``conn`` leave the database file alone (no WAL checkpoint);
    False when that cannot be done safely here (see the module)."""
    if hasattr(conn, "setconfig"):  # Python >= 3.12
        conn.setconfig(SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, True)
        return True
    if sys.implementation.name != "cpython" or sys.version_info[:2] not in ((3, 10), (3, 11)):
        return False  # the object layout below is known for these alone
    import _sqlite3
    import ctypes

    lib = ctypes.CDLL(_sqlite3.__file__)  # its symbols: the SQLite the module uses
    # CPython 3.10/3.11's pysqlite_Connection keeps ``sqlite3 *db`` right after PyObject_HEAD.
    db = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
    if not db:  # already closed
        return False
    filename = lib.sqlite3_db_filename
    filename.argtypes, filename.restype = [ctypes.c_void_p, ctypes.c_char_p], ctypes.c_char_p
    if filename(db, b"main") != os.fsencode(path):
        return False  # not the handle we think it is: do not touch it
    config = lib.sqlite3_db_config
    config.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    return config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, None) == 0


def _let_go(path: str, conn: _Connection) -> None:
    """Close ``conn`` without a checkpoint and remove its journals; when that
    cannot be done safely, keep it open for good. Never raises: one
    connection's failure must not keep the others open."""
    try:
        quiet = _skip_checkpoint_on_close(conn, path)
    except Exception:  # ctypes, a missing symbol: any of it means "cannot"
        log.exception("%s: cannot close a connection without a checkpoint", path)
        quiet = False
    try:
        _remove_journals(path, conn.journals)
    except OSError as e:
        log.warning("%s: cannot remove the old file's journals: %s", path, e)
    if quiet:
        try:
            conn.close()
            _OPEN.discard(conn)
            return
        except sqlite3.Error as e:
            log.warning("%s: closing an old connection failed: %s", path, e)
    log.warning("%s: keeping a connection to the old file open until this process exits", path)
    _KEPT_OPEN.append(conn)
    with suppress(Exception):  # not even interpreter shutdown may close it
        import ctypes

        ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))


def _remove_journals(path: str, journals: Sequence[tuple[str, tuple[int, int]]]) -> None:
    """Delete the journals a connection opened, if they are still the ones at ``path``."""
    for suffix, opened in journals:
        if _file_id(path + suffix) == opened:
            with suppress(FileNotFoundError):
                os.unlink(path + suffix)


def _translated(method: F) -> F:
    """Turn SQLite and file-system errors of a public method into StoreUnavailable."""

    @functools.wraps(method)
    def wrapper(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, OSError) as e:
            raise self._unavailable(e) from e

    return wrapper  # type: ignore[return-value]


class SQLiteStore:
    """A ``Store`` in the SQLite file at ``path`` (created, with its directory, if missing).

    Safe to share between threads, and between processes through the file.
    Opening is lazy: the first call opens this thread's connection. Every
    method raises StoreUnavailable when the file cannot be opened, read or
    written, or the write lock stays taken longer than BUSY_TIMEOUT.
    """

    def __init__(
        self, path: str, *, poll_interval: float = POLL_INTERVAL, history: int = DEFAULT_HISTORY
    ) -> None:
        self.path = os.path.abspath(path)
        self.url = f"sqlite://{self.path}"
        self._poll = poll_interval
        self._history = history
        self._local = threading.local()
        self._conns: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._conns_lock = threading.Lock()
        self._generation = 0  # moves on when the file is found emptied or replaced
        self._stale: set[_Connection] = set()  # old generation, in use by their threads
        self._drained = threading.Condition(self._conns_lock)  # notified as _stale shrinks
        self._write_lock = threading.Lock()
        self._swept_at = float("-inf")

    # -- reads ---------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        """The key's current value, or None."""
        kvs = self.range(key).kvs
        return kvs[0] if kvs else None

    @_translated
    def range(self, key: str, prefix: bool = False, limit: int = 0) -> RangeResult:
        """One key, or every key under a prefix, in key order, at one revision."""
        with self._conn() as conn:
            self._sweep_if_due(conn)
            with self._transaction(conn, write=False) as tx:
                kvs = tx.select(key, prefix, limit)
        return RangeResult(kvs, tx.revision)

    @_translated
    def status(self) -> int:
        """The current revision; raises StoreUnavailable when the store is unusable."""
        with self._conn() as conn, self._transaction(conn, write=False) as tx:
            return tx.revision

    # -- writes --------------------------------------------------------------

    @_translated
    def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Atomically (across processes): if every compare holds run ``success`` else
        ``failure``. Writes bump the revision once; a read-only txn does not.
        Raises LeaseNotFound (and changes nothing) for a Put with a dead lease."""
        write = _writes(success) or _writes(failure)
        with self._conn() as conn, self._transaction(conn, write) as tx:
            ok = all(_holds(c, tx.one(c.key)) for c in compares)
            responses = [tx.apply(op) for op in (success if ok else failure)]
        return TxnResult(ok, tx.revision, responses)

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Write one key; returns the new revision."""
        return self.txn((), [Put(key, value, lease)]).revision

    def delete(self, key: str, prefix: bool = False) -> int:
        """Delete a key or a prefix; returns how many keys went."""
        count = self.txn((), [Delete(key, prefix)]).responses[0]
        assert isinstance(count, int)
        return count

    # -- leases --------------------------------------------------------------

    @_translated
    def grant(self, ttl: float) -> int:
        """A new lease (id > 0, never reused) that expires ``ttl`` seconds from now."""
        if ttl <= 0:
            raise ValueError(f"lease TTL must be positive, got {ttl}")
        with self._conn() as conn, self._transaction(conn, write=True) as tx:
            return tx.grant(ttl)

    @_translated
    def keepalive(self, lease: int) -> float:
        """Renew a lease to its full TTL; returns the TTL. Raises LeaseNotFound."""
        with self._conn() as conn, self._transaction(conn, write=True) as tx:
            return tx.keepalive(lease)

    @_translated
    def revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys (with events). A missing lease is not an error."""
        with self._conn() as conn, self._transaction(conn, write=True) as tx:
            tx.revoke(lease)

    # -- watch ---------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int, timeout: float) -> Iterator[list[Event]]:
        """Batches of events under ``prefix`` from ``start_revision`` on, in revision order.

        ``start_revision`` 0 means "from now on", as in etcd. A batch never
        splits a revision, so resuming at the last seen revision + 1 misses
        nothing. Yields ``[]`` when ``timeout`` seconds pass without events.
        Raises (when iterated) Compacted if ``start_revision`` is at or below
        the compacted revision, including when the watcher falls that far
        behind, and StoreUnavailable.
        """
        try:
            conn = self._open()
            with self._conns_lock:
                self._conns.add(conn)  # let go of along with the others on a reset
            try:
                yield from self._follow(conn, prefix, start_revision, timeout)
            finally:
                self._close_conn(conn)
        except (sqlite3.Error, OSError) as e:
            raise self._unavailable(e) from e

    def _follow(
        self, conn: sqlite3.Connection, prefix: str, start: int, timeout: float
    ) -> Iterator[list[Event]]:
        if start <= 0:
            with self._held(conn):
                start = conn.execute("SELECT revision FROM meta").fetchone()[0] + 1
        # Opened before the first look, so that no commit after it goes unnoticed.
        directory, name = os.path.split(self.path)
        changes = file_changes.watch(directory, (name, name + "-wal"), self._poll)
        try:
            yield from self._follow_changes(conn, prefix, start, timeout, changes)
        finally:
            changes.close()

    def _follow_changes(
        self,
        conn: sqlite3.Connection,
        prefix: str,
        start: int,
        timeout: float,
        changes: file_changes.Changes,
    ) -> Iterator[list[Event]]:
        """Look for events after each change to the files and every SWEEP_INTERVAL
        (lease expiry writes nothing until swept; and a safety net: one cheap
        statement), never in between: an idle watch costs no query."""
        seen, changed, looked = None, True, float("-inf")
        settle_until = float("-inf")
        deadline = time.monotonic() + timeout
        while True:
            with self._held(conn):  # not across the yield: a reset may retire it meanwhile
                swept = self._sweep_if_due(conn)
                events = []
                if swept or changed or time.monotonic() - looked >= SWEEP_INTERVAL:
                    looked = time.monotonic()
                    # data_version changes only when another connection commits: a
                    # cheap "anything new?" that spares the events query otherwise.
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if swept or version != seen:
                        seen, settle_until = version, float("-inf")
                        # A lease keepalive commits without a new revision: one
                        # statement tells, not the events query's transaction.
                        if conn.execute("SELECT revision FROM meta").fetchone()[0] >= start:
                            events = self._events(conn, prefix, start)
                    elif changed and settle_until < looked:
                        # A writer writes its WAL frames, then publishes the commit
                        # in the shared index (no file event): look again shortly.
                        settle_until = looked + COMMIT_SETTLE
            if events:
                start = events[-1].kv.mod_revision + 1
                seen, changed = None, True  # the batch may have been cut: look again
                yield events
                deadline = time.monotonic() + timeout
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                yield []
                deadline = time.monotonic() + timeout
            elif time.monotonic() < settle_until:
                _next_change(changes, min(self._poll, left))
                changed = True
            else:
                changed = _next_change(changes, min(SWEEP_INTERVAL, left))

    def _events(self, conn: sqlite3.Connection, prefix: str, start: int) -> list[Event]:
        """Events under ``prefix`` from revision ``start``: up to WATCH_BATCH, plus the
        rest of the last revision so that no revision is split."""
        where, params = _key_range(prefix, True)
        query = f"SELECT {_EVENT_COLUMNS} FROM events WHERE revision >= ? AND {where}"
        with self._transaction(conn, write=False) as tx:
            if start <= tx.compacted:
                raise Compacted(tx.compacted)
            rows = conn.execute(
                f"{query} ORDER BY revision, seq LIMIT ?", (start, *params, WATCH_BATCH)
            ).fetchall()
            if len(rows) == WATCH_BATCH:
                rev, seq = rows[-1][:2]
                rows += conn.execute(
                    f"{query} AND revision = ? AND seq > ? ORDER BY seq", (start, *params, rev, seq)
                ).fetchall()
        return [_event(row) for row in rows]

    # -- plumbing ------------------------------------------------------------

    @_translated
    def close(self) -> None:
        """Close this process's connections; the store reopens on next use."""
        with self._conns_lock:
            conns, self._conns = list(self._conns), weakref.WeakSet()
            self._local = threading.local()
        # A forked child must not close what it inherited: the parent still uses it.
        for conn in conns:
            if conn.pid == os.getpid():
                self._close_conn(conn)

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection, write: bool) -> Iterator[_Txn]:
        """A transaction on ``conn``: committed on success, rolled back on error.

        A write transaction takes the write lock first (BEGIN IMMEDIATE) so its
        compares cannot go stale before its writes, then sweeps expired leases.
        """
        # Threads of one process queue here rather than in SQLite's busy handler,
        # which polls with sleeps of up to 100 ms: the agent's workers write often.
        if write and not self._write_lock.acquire(timeout=WRITE_LOCK_TIMEOUT):
            raise StoreUnavailable(
                f"{self.path}: another thread of this process held the write lock for "
                f"{WRITE_LOCK_TIMEOUT:.0f} s"
            )
        try:
            yield from self._run_transaction(conn, write)
        finally:
            if write:
                self._write_lock.release()

    def _run_transaction(self, conn: sqlite3.Connection, write: bool) -> Iterator[_Txn]:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            now = time.time()
            if write:
                self._sweep(conn, now)
            tx = _Txn(conn, now, self._history)
            yield tx
            tx.finish()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite already rolled back after some I/O errors
                conn.execute("ROLLBACK")
            raise
        if write:
            self._checkpoint_if_due(conn)

    def _checkpoint_if_due(self, conn: _Connection) -> None:
        """Copy the WAL into the file once it is large, unless the file changed.
        SQLite's own checkpoint after a commit is off (``wal_autocheckpoint``):
        it would run whatever happened to the file since the call looked, and
        write the old file's pages into an emptied one."""
        try:
            size = os.stat(self.path + "-wal").st_size
        except FileNotFoundError:
            return
        if size >= CHECKPOINT_BYTES and not _file_problem(self.path, conn.file_id):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _sweep(self, conn: sqlite3.Connection, now: float) -> None:
        """Revoke every lease expired by ``now``, at a revision of its own (as etcd)."""
        expired = conn.execute("SELECT id FROM leases WHERE expiry <= ?", (now,)).fetchall()
        if expired:
            tx = _Txn(conn, now, self._history)
            for (lease,) in expired:
                tx.revoke(lease)
            tx.finish()

    def _sweep_if_due(self, conn: sqlite3.Connection) -> bool:
        """Sweep from a reader at most every SWEEP_INTERVAL; True when it took the lock."""
        now = time.monotonic()
        if now - self._swept_at < SWEEP_INTERVAL:
            return False
        self._swept_at = now
        found = conn.execute(
            "SELECT 1 FROM leases WHERE expiry <= ? LIMIT 1", (time.time(),)
        ).fetchone()
        if found:
            with self._transaction(conn, write=True):
                pass
        return found is not None

    @contextmanager
    def _conn(self) -> Iterator[_Connection]:
        """This thread's connection, opened on first use (and again after a fork),
        held for the block (``_held``)."""
        local = self._local
        conn: _Connection | None = getattr(local, "conn", None)
        if conn is None or conn.pid != os.getpid():
            conn = local.conn = self._open()
            with self._conns_lock:
                self._conns.add(conn)
        with self._held(conn):
            yield conn

    @contextmanager
    def _held(self, conn: _Connection) -> Iterator[None]:
        """Use ``conn`` for the block, holding its ``in_use`` lock; StoreReset
        (after letting go of it) when it belongs to an old generation or the file
        at ``path`` is no longer the one it opened, before or after the block."""
        with conn.in_use:
            self._check(conn)
            try:
                yield
            except Exception as e:
                # An emptied file also fails statements, and an error met on the
                # old file after a reset is no answer: say why, let go of it.
                if isinstance(e, sqlite3.Error) or conn.generation != self._generation:
                    self._check(conn)
                raise
            if conn.generation != self._generation:  # reset by another thread meanwhile
                self._check(conn)

    def _check(self, conn: _Connection) -> None:
        if conn.generation != self._generation:
            self._retire(conn)
            raise StoreReset(self._reset_message("was emptied or replaced"))
        problem = _file_problem(self.path, conn.file_id)
        if problem:
            self._new_generation(conn)
            raise StoreReset(self._reset_message(problem))

    def _reset_message(self, problem: str) -> str:
        return (
            f"SQLite store {self.path} {problem} while this process had it open: "
            "the old file was let go of and the next call opens the new one. If "
            "containers of this host were recorded in the old file, run `netplugctl "
            "recover` on each host"
        )

    def _new_generation(self, own: _Connection | None) -> None:
        """Make every connection of this process stale, letting go of ``own`` (the
        caller holds it) and of those no thread uses right now; the others are
        let go of by their threads (``_held``). Let go of, not closed: closing
        would checkpoint the old file's pages into the new one."""
        with self._conns_lock:
            self._generation += 1
            others = [c for c in self._conns if c is not own and c.pid == os.getpid()]
            self._conns = weakref.WeakSet()
            self._stale.update(others)
        if own is not None:
            self._retire(own)
        for conn in others:
            if conn.in_use.acquire(blocking=False):
                try:
                    self._retire(conn)
                finally:
                    conn.in_use.release()

    def _retire(self, conn: _Connection) -> None:
        """Let go of a stale ``conn`` (once), which no other thread is using."""
        if getattr(self._local, "conn", None) is conn:
            del self._local.conn
        if not conn.retired:
            conn.retired = True
            _let_go(self.path, conn)
        with self._conns_lock:
            self._stale.discard(conn)
            self._drained.notify_all()

    def _close_conn(self, conn: _Connection) -> None:
        """Close ``conn`` once no thread runs a statement on it; let go of it
        instead when the file changed (a plain close would checkpoint the old
        pages into the new file)."""
        if not conn.in_use.acquire(timeout=WRITE_LOCK_TIMEOUT + BUSY_TIMEOUT):
            log.warning("%s: a connection stayed in use: left open", self.path)
            return
        try:
            if conn.retired:
                return
            if conn.generation != self._generation or _file_problem(self.path, conn.file_id):
                self._retire(conn)
            else:
                conn.close()
                _OPEN.discard(conn)
        finally:
            conn.in_use.release()

    def _open(self) -> _Connection:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._refuse_while_old_file_held()
        if _emptied_under_others(self.path):
            self._new_generation(None)  # the journal may be this very process's
            self._refuse_while_old_file_held()
            if _emptied_under_others(self.path):
                raise StoreReset(
                    f"SQLite store {self.path} is empty but its journal {self.path}-wal "
                    "holds data: the file was emptied while another process (netplugd?) "
                    "had it open. Stop that process, then run `netplugctl recover` on "
                    "each host"
                )
        if self._replaced_under_own():
            # Let go of the old file's connections first: that removes its journal,
            # which a new connection would otherwise read as the new file's.
            self._new_generation(None)
            self._refuse_while_old_file_held()
        # Taken before connecting: a file replaced (or a reset begun) while this
        # opens makes the new connection stale at once, never silently old.
        generation, file_id = self._generation, _file_id(self.path)
        # One thread at a time: a header read here, while another thread's new
        # connection to that file already holds locks, would drop them.
        with _OPENING:
            if not _held_in_process(file_id) and (problem := _header_problem(self.path)):
                raise self._corrupt(problem)
            conn = self._connect()
            conn.pid, conn.generation, conn.in_use = os.getpid(), generation, threading.Lock()
            try:
                _prepare(conn)
                conn.file_id = file_id or _file_id(self.path) or (0, 0)
                conn.journals = tuple(
                    (suffix, found)
                    for suffix in JOURNALS
                    if (found := _file_id(self.path + suffix))
                )
            except BaseException:
                conn.close()
                raise
            _OPEN.add(conn)
            if _file_id(self.path) != conn.file_id:
                # Replaced while it opened: which file it has is unknown, so it
                # goes without a checkpoint and without taking any journal along.
                conn.journals, conn.retired = (), True
                _let_go(self.path, conn)
                raise StoreReset(self._reset_message("was replaced while it was being opened"))
        return conn

    def _connect(self) -> _Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT,
            isolation_level=None,
            check_same_thread=False,
            factory=_Connection,
        )
        assert isinstance(conn, _Connection)
        return conn

    def _replaced_under_own(self) -> bool:
        """Another file is at ``path`` than the one this process's connections opened."""
        current = _file_id(self.path)
        with self._conns_lock:
            return any(
                c.file_id != current for c in self._conns if c.pid == os.getpid() and c.file_id
            )

    def _refuse_while_old_file_held(self) -> None:
        """Wait for the statements still running on the old file (a statement's
        time: the busy and write-lock timeouts bound it); StoreReset if some stay
        open in this process: a new connection would share their locks and WAL
        index (see the module)."""
        with self._drained:
            self._drained.wait_for(lambda: not self._stale, WRITE_LOCK_TIMEOUT + BUSY_TIMEOUT)
            busy = len(self._stale)
        if busy:
            raise StoreReset(
                f"SQLite store {self.path} was emptied or replaced while this process had "
                f"it open, and {busy} call(s) are still finishing on the old file: retry in "
                "a moment. If containers of this host were recorded in the old file, run "
                "`netplugctl recover` on each host"
            )
        if _KEPT_OPEN and any(kept.file_id == _file_id(self.path) for kept in _KEPT_OPEN):
            raise StoreReset(
                f"SQLite store {self.path} was emptied while this process had it open, and "
                "a connection to it could not be closed safely: restart this process, then "
                "run `netplugctl recover` on each host"
            )

    def _corrupt(self, problem: str) -> StoreCorrupt:
        return StoreCorrupt(
            f"SQLite store {self.path}: {problem}: the file is damaged or is no netplug "
            "store, and retrying will not help. Stop netplugd, move the file aside (keep "
            "it for inspection) or point the store URL elsewhere, then run `netplugctl "
            "recover` on each host to rebuild the records from its interfaces"
        )

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        text = str(exc)
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB):
            return self._corrupt(text)
        if "locked" in text or "busy" in text:
            fix = (
                f"another process held the write lock over {BUSY_TIMEOUT:g} s; retry, and "
                "look for a stuck process that has the file open"
            )
        elif isinstance(exc, OSError) or "unable to open" in text:
            fix = "make sure its directory exists (or can be created) and this user can write it"
        else:
            fix = (
                "check the file's permissions, free disk space and integrity "
                "(sqlite3 FILE 'PRAGMA integrity_check'), or point the store URL elsewhere"
            )
        return StoreUnavailable(f"SQLite store {self.path}: {text}: {fix}")
