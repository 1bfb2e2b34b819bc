"""Packed answers by raw question: the server's hot path (no parsing on a hit).

The key is the query's bytes after its 2-byte ID, within the scope it arrived
in (listener and transport: the network decides what bare names mean, the
transport how large a reply may be). Everything a reply depends on is in
those bytes or that scope: name with its case (echoed), type, class, flags
and the EDNS payload size. The entry is the reply's bytes after the ID, one
per rotation; a hit takes the next rotation and puts the query's ID in front.

Each scope has a table (a dict) of its own, for the whole life of the cache:
a listener's thread looks answers up in it without a lock or a tuple key.
Writes (``put``, ``clear``) take a lock, so a table is never read half
changed, and ``put`` refuses an answer made before the last ``clear``
(``generation``): a resolver that raced a snapshot swap cannot leave a stale
answer behind. The server clears the cache when it swaps the snapshot. Size
is bounded over all scopes; past ``max_entries`` the oldest entry of the
scope being filled goes (first in, first out: cheap, and any entry is rebuilt
in microseconds), or of the largest scope when that one is empty.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable


class Entry:
    """One cached answer: its rotations (bytes after the ID) and a caller's tag.
    ``single`` is the answer when it has one rotation (most do), else None:
    ``entry.single or entry.next()`` saves the hot path a call."""

    __slots__ = ("_turn", "single", "tag", "variants")

    def __init__(self, variants: tuple[bytes, ...], tag: int = 0) -> None:
        self.variants = variants
        self.single = variants[0] if len(variants) == 1 else None
        self.tag = tag
        self._turn = 0

    def next(self) -> bytes:
        """The next rotation (round robin); the only one when there is one."""
        variants = self.variants
        if len(variants) == 1:
            return variants[0]
        self._turn = turn = (self._turn + 1) % len(variants)
        return variants[turn]


class AnswerCache:
    def __init__(self, max_entries: int = 50_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be positive, got {max_entries}")
        self.max_entries = max_entries
        self.generation = 0  # how many times the cache was cleared
        self._tables: dict[Hashable, dict[bytes, Entry]] = {}
        self._size = 0
        self._lock = threading.Lock()

    def table(self, scope: Hashable) -> dict[bytes, Entry]:
        """The entries of ``scope`` by question: the same dict for as long as the
        cache lives (``clear`` empties it), safe to read from any thread."""
        with self._lock:
            return self._tables.setdefault(scope, {})

    def get(self, scope: Hashable, question: bytes) -> Entry | None:
        """The entry for ``question`` (the query's bytes after the ID) in ``scope``."""
        table = self._tables.get(scope)
        return None if table is None else table.get(question)

    def put(
        self,
        scope: Hashable,
        question: bytes,
        replies: tuple[bytes, ...],
        tag: int = 0,
        generation: int | None = None,
    ) -> Entry:
        """Cache whole packed ``replies`` (IDs included; they are dropped), unless
        the cache was cleared since ``generation`` was read (the entry is
        returned either way)."""
        entry = Entry(tuple(r[2:] for r in replies), tag)
        with self._lock:
            if generation is not None and generation != self.generation:
                return entry
            table = self._tables.setdefault(scope, {})
            if question not in table:
                if self._size >= self.max_entries:
                    self._evict(table)
                self._size += 1
            table[question] = entry
        return entry

    def _evict(self, table: dict[bytes, Entry]) -> None:
        victim = table if table else max(self._tables.values(), key=len)
        del victim[next(iter(victim))]
        self._size -= 1

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            for table in self._tables.values():
                table.clear()
            self._size = 0

    def __len__(self) -> int:
        return self._size
