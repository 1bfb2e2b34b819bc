"""Following a store: read it whole, then watch it from there, again after a failure.

The loop that netplugd's store view and netplug-dns's registry follower
share. ``Following.follow`` reads (``_read``, which returns the revision it
read at), then hands every non-empty batch the watch on ``prefix`` brings from
that revision + 1 to ``_apply``. A watch whose history was compacted away is
read again in full; a store failure is retried with a backoff that doubles
from RETRY_MIN to RETRY_MAX, ``_status(False)`` told, what the follower holds
kept. A store that was reset or is corrupt (StoreReset, StoreCorrupt) is no
outage: it is told to ``_refused`` and logged as an error (it needs
``netplugctl recover``, not patience), then read again every RETRY_REFUSED
seconds, so that the follower picks up within that of the recover (the store
answers: a read that is refused costs it one identity check, and a backoff
would leave the host's peers and names behind for up to RETRY_MAX after its
recover). Anything else is raised, the store told down first.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from netplug.ipam.store.base import Compacted, Event, Store, StoreCorrupt, StoreError, StoreReset

log = logging.getLogger(__name__)

WATCH_TIMEOUT = 0.5  # seconds between checks for stop while the store is idle
RETRY_MIN, RETRY_MAX = 0.2, 5.0  # backoff after a store failure, seconds
RETRY_REFUSED = 0.5  # seconds between reads of a store refused as reset or corrupt


class Following:
    """A follower of ``store`` under ``prefix``; subclasses read, apply and tell."""

    store: Store
    prefix: str
    name = "store follower"  # in its log lines
    up = False  # whether the store answered the last read or watch
    refusal = ""  # the reset or corruption it met since it last answered, if any

    def follow(self, stop: threading.Event) -> None:
        """Follow until ``stop``; see the module."""
        delay = RETRY_MIN
        while not stop.is_set():
            try:
                revision = self._read()
                delay = RETRY_MIN
                self._watch(revision, stop)
            except Compacted as e:
                log.warning("%s: watch fell behind (%s): reading it again", self.name, e)
            except (StoreReset, StoreCorrupt) as e:
                if str(e) != self.refusal:
                    log.error("%s: store refused, keeping what it holds: %s", self.name, e)
                self._refused(e)
                stop.wait(RETRY_REFUSED)
            except StoreError as e:
                if self.up or delay == RETRY_MIN:
                    log.warning("%s: store unreachable, keeping what it holds: %s", self.name, e)
                self._status(False)
                stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX)
            except Exception:
                self._status(False)
                raise

    def _watch(self, revision: int, stop: threading.Event) -> None:
        watch = self.store.watch(self.prefix, revision + 1, WATCH_TIMEOUT)
        with contextlib.closing(watch):  # type: ignore[type-var]
            for batch in watch:
                if stop.is_set():
                    return
                if batch:
                    self._apply(batch)
                self._tick()

    def _read(self) -> int:
        """Read what is followed, tell the store up; the revision read at."""
        raise NotImplementedError

    def _apply(self, batch: list[Event]) -> None:
        raise NotImplementedError

    def _status(self, up: bool) -> None:
        raise NotImplementedError

    def _tick(self) -> None:
        """After each batch of the watch, an empty one too (every WATCH_TIMEOUT
        seconds while the store is idle): for what is due at a time."""

    def _refused(self, error: StoreError) -> None:
        """The store must not be followed (``error``): down, with the reason kept."""
        self.refusal = str(error)
        self._status(False)
