"""Packed answers by raw question: the server's hot path (no parsing on a hit).

The key is the query's bytes after its 2-byte ID, together with the scope it
arrived in (listener and transport: the network decides what bare names mean,
the transport how large a reply may be). Everything a reply depends on is in
those bytes or that scope: name with its case (echoed), type, class, flags
and the EDNS payload size. The entry is the reply's bytes after the ID, one
per rotation; a hit takes the next rotation and puts the query's ID in front.

The cache holds answers of one registry snapshot: the server clears it when
it swaps the snapshot. Size is bounded; past ``max_entries`` the oldest entry
goes (first in, first out: cheap, and any entry is rebuilt in microseconds).
"""

from __future__ import annotations

from collections.abc import Hashable


class Entry:
    """One cached answer: its rotations (bytes after the ID) and a caller's tag."""

    __slots__ = ("_turn", "tag", "variants")

    def __init__(self, variants: tuple[bytes, ...], tag: object = None) -> None:
        self.variants = variants
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
        self._entries: dict[tuple[Hashable, bytes], Entry] = {}

    def get(self, scope: Hashable, question: bytes) -> Entry | None:
        """The entry for ``question`` (the query's bytes after the ID) in ``scope``."""
        return self._entries.get((scope, question))

    def put(
        self, scope: Hashable, question: bytes, replies: tuple[bytes, ...], tag: object = None
    ) -> Entry:
        """Cache whole packed ``replies`` (IDs included; they are dropped)."""
        entries = self._entries
        if len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entry = entries[(scope, question)] = Entry(tuple(r[2:] for r in replies), tag)
        return entry

    def clear(self) -> None:
        self._entries = {}

    def __len__(self) -> int:
        return len(self._entries)
