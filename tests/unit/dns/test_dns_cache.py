"""The packed-answer cache: keys, rotation, bounds."""

from __future__ import annotations

import pytest

from netplug.dns.cache import AnswerCache


def test_put_get_strips_the_id() -> None:
    cache = AnswerCache()
    entry = cache.put("s", b"question", (b"\x12\x34answer",), tag="t")
    assert cache.get("s", b"question") is entry and entry.tag == "t"
    assert entry.next() == b"answer"
    assert cache.get("other-scope", b"question") is None
    assert cache.get("s", b"Question") is None  # raw bytes: case is part of the key


def test_rotation_round_robin() -> None:
    entry = AnswerCache().put("s", b"q", (b"..a", b"..b", b"..c"))
    assert [entry.next() for _ in range(6)] == [b"b", b"c", b"a", b"b", b"c", b"a"]


def test_bounded_first_in_first_out() -> None:
    cache = AnswerCache(max_entries=3)
    for i in range(5):
        cache.put("s", bytes([i]), (b"..x",))
    assert len(cache) == 3
    assert cache.get("s", b"\x00") is None and cache.get("s", b"\x04") is not None


def test_clear() -> None:
    cache = AnswerCache()
    cache.put("s", b"q", (b"..x",))
    cache.clear()
    assert len(cache) == 0 and cache.get("s", b"q") is None


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        AnswerCache(0)


def test_a_put_made_before_a_clear_is_refused() -> None:
    """A resolver that read the snapshot before a swap must not cache its answer."""
    cache = AnswerCache()
    before = cache.generation
    cache.clear()  # the server swapped the snapshot meanwhile
    cache.put("s", b"q", (b"..stale",), generation=before)
    assert cache.get("s", b"q") is None and len(cache) == 0
    cache.put("s", b"q", (b"..fresh",), generation=cache.generation)
    assert cache.get("s", b"q").next() == b"fresh"


def test_a_scope_keeps_its_table_across_clears() -> None:
    """A listener's thread holds its table: clear empties it in place."""
    cache = AnswerCache()
    table = cache.table("s")
    cache.put("s", b"q", (b"..x",))
    assert b"q" in table
    cache.clear()
    assert table == {} and cache.table("s") is table


def test_bounded_over_all_scopes() -> None:
    cache = AnswerCache(max_entries=3)
    for i in range(3):
        cache.put("a", bytes([i]), (b"..x",))
    cache.put("b", b"\x09", (b"..y",))  # b is empty: the oldest of the largest scope goes
    assert len(cache) == 3
    assert cache.get("a", b"\x00") is None and cache.get("b", b"\x09") is not None
    cache.put("b", b"\x0a", (b"..y",))  # b has entries: its own oldest goes
    assert cache.get("b", b"\x09") is None and cache.get("a", b"\x01") is not None
    cache.put("b", b"\x0a", (b"..z",))  # a replacement takes no room
    assert len(cache) == 3
