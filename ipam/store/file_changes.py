"""Waiting for some process to change one of a few files in a directory.

An SQLite watch has to notice another process's commit within milliseconds,
and polling the database for it every 10 ms cost every idle agent about 1 %
of a core. A commit in WAL mode always writes the ``-wal`` file with
``write()``, and a file emptied or replaced shows in its directory, so
``watch(dir, names)`` waits on inotify for the directory (events for other
files in it are skipped): no wake-up at all while nothing changes. Where
inotify cannot be had (not Linux, the per-user limit of instances reached, the
directory gone), it falls back to comparing the files' inode, size and mtime
every ``poll`` seconds: system calls only, never a query.

A directory removed or renamed away takes its inotify watch with it (the
kernel sends IN_IGNORED, or IN_MOVE_SELF and the watch follows the old
directory): the watch is then armed again on the path, at once if a directory
is there, else at most every REARM_INTERVAL while ``wait`` waits, so that the
store's files are watched again as soon as they come back.

``wait(timeout)`` says whether something may have changed since the last
``wait`` that said so (or since ``watch``); a spurious True is allowed, a
missed change is not. ``quiet(window, limit)`` then lets a burst of writes
end: a commit writes its WAL frames one ``write()`` each (an ADD's: about
nine), and a watch that looked at each of them paid a look per frame (most of
a 10-host lab's agents' store-view CPU per event), before the commit was even
published.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import select
import struct
import time
from collections.abc import Iterable
from typing import Protocol

log = logging.getLogger(__name__)

# <sys/inotify.h>
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x800, 0x4000, 0x8000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
FILE_EVENTS = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO
DIR_EVENTS = FILE_EVENTS | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
# The watched directory went away: the watch is dead or follows the old one.
GONE = IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF
EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name
READ_SIZE = 64 * 1024
REARM_INTERVAL = 0.05  # seconds between attempts to watch a directory that is not there


class Changes(Protocol):
    def wait(self, timeout: float) -> bool: ...

    def quiet(self, window: float, limit: float) -> None: ...

    def close(self) -> None: ...


def watch(directory: str, names: Iterable[str], poll: float) -> Changes:
    """Changes to the files ``names`` in ``directory``: inotify, else polling."""
    names = frozenset(names)
    try:
        return Inotify(directory, names)
    except OSError as e:
        log.debug("%s: no inotify (%s): polling the files every %g s", directory, e, poll)
        return StatPoll(directory, names, poll)


class Inotify:
    """inotify on ``directory``, through libc (the standard library has no binding)."""

    def __init__(self, directory: str, names: frozenset[str]) -> None:
        self._directory = os.fsencode(directory)
        self._names = {os.fsencode(n) for n in names}
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise _errno_error("inotify_init1")
        self._fd: int | None = fd
        self._wd: int | None = None  # None: the directory is not watched (gone)
        if not self._arm():
            error = _errno_error(f"inotify_add_watch {directory}")
            self.close()
            raise error

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._fd is not None:
            left = max(0.0, deadline - time.monotonic())
            if self._wd is None:  # nothing to wake us: look for the directory now and then
                if self._arm():
                    return True  # its files may have changed while unwatched
                if left <= 0:
                    return False
                time.sleep(min(REARM_INTERVAL, left))
                continue
            ready, _, _ = select.select([self._fd], [], [], left)
            if not ready:
                return False
            if self._relevant(os.read(self._fd, READ_SIZE)):
                return True
        return False

    def quiet(self, window: float, limit: float) -> None:
        """Return once a ``window`` seconds long sleep brought no event for the
        named files, or ``limit`` seconds after the call (a writer that never
        stops). Sleeping, not waking for each write: the kernel merges a burst
        of identical events queued meanwhile into one, read at the end."""
        deadline = time.monotonic() + limit
        while self._fd is not None and self._wd is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(window, left))
            try:
                data = os.read(self._fd, READ_SIZE)
            except BlockingIOError:  # nothing came
                return
            if not self._relevant(data):  # a directory gone is disarmed there
                return

    def _arm(self) -> bool:
        """Watch the directory now at the path; False while there is none."""
        assert self._fd is not None
        wd = self._libc.inotify_add_watch(self._fd, self._directory, DIR_EVENTS)
        self._wd = wd if wd >= 0 else None
        return self._wd is not None

    def _relevant(self, data: bytes) -> bool:
        found, offset = False, 0
        while offset + EVENT_HEADER.size <= len(data):
            wd, mask, _cookie, length = EVENT_HEADER.unpack_from(data, offset)
            offset += EVENT_HEADER.size
            name = data[offset : offset + length].rstrip(b"\0")
            offset += length
            # Events of a watch dropped before (a directory moved away) wake nothing.
            mine = wd == self._wd
            if mine and mask & GONE:
                self._disarm()
            found = (
                found
                or bool(mask & IN_Q_OVERFLOW)
                or (mine and (bool(mask & GONE) or name in self._names))
            )
        return found

    def _disarm(self) -> None:
        """Drop a watch whose directory left the path (a moved one would still report)."""
        assert self._fd is not None and self._wd is not None
        self._libc.inotify_rm_watch(self._fd, self._wd)  # EINVAL once IN_IGNORED: fine
        self._wd = None
        # A directory already back at the path: watched before the next wait.
        self._arm()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class StatPoll:
    """The fallback: (inode, size, mtime) of each file, compared every ``poll`` s."""

    def __init__(self, directory: str, names: frozenset[str], poll: float) -> None:
        self._paths = [os.path.join(directory, n) for n in sorted(names)]
        self._poll = poll
        self._seen = self._signature()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            now = self._signature()
            if now != self._seen:
                self._seen = now
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self._poll, left))

    def quiet(self, window: float, limit: float) -> None:
        """Nothing to wait for: a poll sees a burst of writes as one change anyway."""

    def _signature(self) -> tuple[tuple[int, int, int] | None, ...]:
        return tuple(_stat(path) for path in self._paths)

    def close(self) -> None:
        pass


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's among them
    if not hasattr(libc, "inotify_init1"):
        raise OSError("the C library has no inotify")
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def _errno_error(what: str) -> OSError:
    errno = ctypes.get_errno()
    return OSError(errno, f"{what}: {os.strerror(errno)}")
