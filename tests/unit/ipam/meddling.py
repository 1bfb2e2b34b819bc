"""A store through which a test makes another process act at one exact moment."""

from __future__ import annotations

from collections.abc import Callable

from netplug.ipam.store.base import OutcomeUnknown


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


class AnswerLost:
    """The store, except that the next ``lose`` write transactions are applied
    but answered with OutcomeUnknown, as an etcd leader change can do."""

    def __init__(self, store) -> None:
        self._store = store
        self.lose = 0

    def txn(self, *args, **kw):
        result = self._store.txn(*args, **kw)
        if self.lose > 0:
            self.lose -= 1
            raise OutcomeUnknown("the answer was lost (test)")
        return result

    def __getattr__(self, name):
        return getattr(self._store, name)
