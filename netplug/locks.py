"""Host locks: per network, shared by plugin processes and the agent's threads
(flock), and per key among the threads of one process (``KeyedLocks``).

flock(2) locks belong to an open file description, so every call opens its own
descriptor: that serializes threads of one agent as well as separate plugin
processes. Waiting is bounded; a timeout is "try again later", never a hang.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_TIMEOUT = 10.0


class LockTimeout(Exception):
    pass


@contextmanager
def network_lock(
    run_dir: str, host: str, network: str, timeout: float = LOCK_TIMEOUT
) -> Iterator[None]:
    """Hold the lock of ``network`` on ``host`` for the body."""
    path = Path(run_dir) / host / f"{network}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _acquire(fd, path, timeout)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def _acquire(fd: int, path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeout(f"lock {path} still held after {timeout:.0f} s") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


class KeyedLocks:
    """One lock per key, made on first use and dropped when nobody holds or
    waits for it (the agent serializes calls per attachment with these)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[object, tuple[threading.Lock, int]] = {}

    @contextmanager
    def held(self, key: object) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
