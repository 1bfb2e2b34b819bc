"""A store through which a test makes another process act at one exact moment."""

from __future__ import annotations

from collections.abc import Callable


class BehindTheBack:
    """The store, except that right after the ``after``-th range read of
    ``prefix``, ``meddle()`` runs: another process on the same host at work
    between this one's read and its write."""

    def __init__(self, store, prefix: str, meddle: Callable[[], object], after: int = 1) -> None:
        self._store, self._prefix, self._meddle = store, prefix, meddle
        self._reads_left = after

    def range(self, key, **kw):
        result = self._store.range(key, **kw)
        if key == self._prefix:
            self._reads_left -= 1
            if self._reads_left == 0:
                self._meddle()
        return result

    def __getattr__(self, name):
        return getattr(self._store, name)
