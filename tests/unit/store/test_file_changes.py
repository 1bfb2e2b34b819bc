"""file_changes: a wait that returns when one of the named files changes, with
inotify and with the stat-polling fallback (both on real files)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netplug.ipam.store import file_changes


@pytest.fixture(params=["inotify", "stat-poll"])
def changes(request, tmp_path: Path) -> Iterator[file_changes.Changes]:
    (tmp_path / "db").write_bytes(b"x" * 100)
    names = frozenset({"db", "db-wal"})
    if request.param == "inotify":
        c: file_changes.Changes = file_changes.Inotify(str(tmp_path), names)
    else:
        c = file_changes.StatPoll(str(tmp_path), names, 0.005)
    try:
        yield c
    finally:
        c.close()


def _later(action, delay: float = 0.05) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), action()))
    thread.start()
    return thread


def _append(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"commit")


def test_quiet_files_time_out(changes) -> None:
    started = time.monotonic()
    assert changes.wait(0.1) is False
    assert 0.09 <= time.monotonic() - started < 1


def test_a_write_to_a_named_file_wakes_the_wait_at_once(changes, tmp_path) -> None:
    thread = _later(lambda: _append(tmp_path / "db-wal"))
    started = time.monotonic()
    try:
        assert changes.wait(3.0) is True
        assert time.monotonic() - started < 1.0
    finally:
        thread.join()


def _burst(path: Path, writes: int, gap: float) -> None:
    """A commit's frames, one ``write()`` each."""
    with open(path, "ab", buffering=0) as f:
        for _ in range(writes):
            f.write(b"frame")
            time.sleep(gap)


def test_after_a_wake_quiet_waits_for_the_burst_of_writes_to_end(tmp_path) -> None:
    """One look per commit, not one per frame: the burst's later writes are read
    by ``quiet``, and the next wait sees nothing new."""
    changes = file_changes.Inotify(str(tmp_path), frozenset({"db-wal"}))
    thread = _later(lambda: _burst(tmp_path / "db-wal", 20, 0.0005))
    try:
        assert changes.wait(3.0) is True
        started = time.monotonic()
        changes.quiet(0.1, 5.0)
        assert time.monotonic() - started >= 0.1  # at least the quiet window
        thread.join()
        assert changes.wait(0.05) is False
    finally:
        thread.join()
        changes.close()


def test_quiet_gives_up_at_its_limit_when_the_writes_never_stop(tmp_path) -> None:
    changes = file_changes.Inotify(str(tmp_path), frozenset({"db-wal"}))
    thread = _later(lambda: _burst(tmp_path / "db-wal", 200, 0.002), delay=0)
    try:
        assert changes.wait(3.0) is True
        started = time.monotonic()
        changes.quiet(0.5, 0.1)  # writes come within every window: the limit ends it
        assert 0.09 <= time.monotonic() - started < 0.3
    finally:
        thread.join()
        changes.close()


def test_another_file_in_the_directory_does_not_wake_it(changes, tmp_path) -> None:
    thread = _later(lambda: _append(tmp_path / "agent.log"))
    try:
        assert changes.wait(0.2) is False
    finally:
        thread.join()


def test_a_replaced_file_wakes_it(changes, tmp_path) -> None:
    def replace() -> None:
        (tmp_path / "new").write_bytes(b"y" * 100)
        os.replace(tmp_path / "new", tmp_path / "db")

    thread = _later(replace)
    try:
        assert changes.wait(3.0) is True
    finally:
        thread.join()


def test_a_change_between_two_waits_is_not_lost(changes, tmp_path) -> None:
    _append(tmp_path / "db-wal")  # while nobody waits
    assert changes.wait(1.0) is True
    assert changes.wait(0.05) is False  # reported once


def test_a_missing_directory_falls_back_to_polling(tmp_path) -> None:
    changes = file_changes.watch(str(tmp_path / "gone"), ["db"], 0.01)
    try:
        assert isinstance(changes, file_changes.StatPoll)
        assert changes.wait(0.02) is False
    finally:
        changes.close()


@pytest.fixture
def in_sub(tmp_path: Path) -> Iterator[tuple[Path, file_changes.Inotify]]:
    """inotify on ``tmp_path/store``, a directory the tests remove and replace."""
    directory = tmp_path / "store"
    directory.mkdir()
    changes = file_changes.Inotify(str(directory), frozenset({"db", "db-wal"}))
    try:
        yield directory, changes
    finally:
        changes.close()


def _remove(directory: Path) -> None:
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()


def _woken_by_a_commit(changes: file_changes.Changes, path: Path) -> float | None:
    """Seconds until a write to ``path`` 50 ms from now wakes ``changes`` (None: never,
    within 3 s; the SQLite store's sweep would look after 0.5 s)."""
    thread = _later(lambda: _append(path))
    started = time.monotonic()
    try:
        return time.monotonic() - started if changes.wait(3.0) else None
    finally:
        thread.join()


def test_a_directory_removed_and_made_again_is_watched_again(in_sub) -> None:
    directory, changes = in_sub
    _remove(directory)
    assert changes.wait(1.0) is True  # the directory went: its files may have changed
    directory.mkdir()
    took = _woken_by_a_commit(changes, directory / "db-wal")
    assert took is not None and took < 0.4, f"woken after {took} s"


def test_a_directory_replaced_by_rename_is_watched_at_its_path(in_sub, tmp_path) -> None:
    directory, changes = in_sub
    (tmp_path / "new").mkdir()
    directory.rename(tmp_path / "old")
    (tmp_path / "new").rename(directory)
    assert changes.wait(1.0) is True
    took = _woken_by_a_commit(changes, directory / "db-wal")
    assert took is not None and took < 0.4, f"woken after {took} s"
    # The old directory, moved away, no longer counts (once the write above is all read).
    assert any(not changes.wait(0.05) for _ in range(20))
    thread = _later(lambda: _append(tmp_path / "old" / "db-wal"))
    try:
        assert changes.wait(0.3) is False
    finally:
        thread.join()


def test_a_directory_that_comes_back_later_is_watched_again(in_sub) -> None:
    directory, changes = in_sub
    _remove(directory)
    assert changes.wait(1.0) is True
    assert changes.wait(0.1) is False  # nothing there, nothing to report
    thread = _later(directory.mkdir, delay=0.1)
    try:
        assert changes.wait(3.0) is True  # watched again: it may hold anything
    finally:
        thread.join()
    took = _woken_by_a_commit(changes, directory / "db")
    assert took is not None and took < 0.4, f"woken after {took} s"
