"""Follow the store: keep the DNS server's snapshot in step with the registry.

One thread reads the registry once, then watches ``/netplug/`` and applies
each batch of events to the snapshot (``Snapshot.apply``, pure), handing every
new snapshot to the event loop with ``call_soon_threadsafe``: a name added on
any host is answered within one watch poll (about 10 ms on SQLite).

When the store fails, the last snapshot stays in use (DNS keeps answering
from what it holds) and the follower retries with backoff, reading the whole
registry again when it gets through; so does a watch whose history was
compacted away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from netplug.dns.registry import Snapshot
from netplug.dns.writer import read_snapshot
from netplug.ipam.schema import ROOT
from netplug.ipam.store.base import Compacted, Event, Store, StoreError

log = logging.getLogger(__name__)

WATCH_TIMEOUT = 0.5  # seconds between checks for stop while the store is idle
RETRY_MIN, RETRY_MAX = 0.2, 5.0  # backoff after a store failure, seconds

Spawn = Callable[[str, Callable[[threading.Event], None]], None]


class Follower:
    """Calls ``publish(snapshot)`` on the event loop for each new snapshot.

    ``on_status(up)`` (also on the loop) tells whether the store answers.
    ``on_batch(events)`` sees every batch the watch delivers, on the follower's
    thread, and ``None`` after each full read of the store (at start, after
    a failure or a compacted watch: anything may have changed since the
    last batch). The agent's overlay rides this watch instead of keeping its own.
    ``trust()``, before each full read, raises StoreError for a store that must
    not be followed (the agent's, once reset): the last snapshot stays.
    Start and stop from the loop that should receive them.
    """

    def __init__(
        self,
        store: Store,
        publish: Callable[[Snapshot], None],
        on_status: Callable[[bool], None] | None = None,
        on_batch: Callable[[list[Event] | None], None] | None = None,
        trust: Callable[[], object] | None = None,
    ) -> None:
        self.store = store
        self._trust = trust
        self._publish = publish
        self._on_status = on_status
        self._on_batch = on_batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self.up = False

    async def start(self, spawn: Spawn | None = None) -> None:
        """Follow in a thread: one of its own, or the one ``spawn(name, run)`` runs
        (netplugd's supervisor, which then sees what fails and stops it)."""
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        if spawn is not None:
            spawn("dns-follower", self.run)
            return
        self._thread = threading.Thread(target=self._run, name="netplug-dns-follow", daemon=True)
        self._thread.start()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the first snapshot was published; False after ``timeout``."""
        assert self._ready is not None, "start() first"
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, WATCH_TIMEOUT * 4)

    # -- the thread ------------------------------------------------------------

    def _run(self) -> None:
        """The follower's own thread: ``run``, again after anything it raises."""
        while not self._stop.is_set():
            try:
                self.run(self._stop)
            except Exception:  # a bug must not end following for good
                log.exception("registry follower failed; retrying")
                self._stop.wait(RETRY_MAX)

    def run(self, stop: threading.Event) -> None:
        """Follow until ``stop``. Store failures are retried here with backoff;
        anything else is raised (the store then counts as down)."""
        delay = RETRY_MIN
        while not stop.is_set():
            try:
                if self._trust is not None:
                    self._trust()
                snap = read_snapshot(self.store)
                self._batch(None)
                self._send(snap, up=True)
                delay = RETRY_MIN
                self._follow(snap, stop)
            except Compacted as e:
                log.warning("registry watch fell behind (%s): reading it again", e)
            except StoreError as e:
                if self.up or delay == RETRY_MIN:
                    log.warning("registry: store unreachable, answering from what we hold: %s", e)
                self._status(False)
                stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX)
            except Exception:
                self._status(False)
                raise

    def _follow(self, snap: Snapshot, stop: threading.Event) -> None:
        watch = self.store.watch(ROOT, snap.revision + 1, WATCH_TIMEOUT)
        with contextlib.closing(watch):  # type: ignore[type-var]
            for batch in watch:
                if stop.is_set():
                    return
                if batch:
                    self._batch(batch)
                    new = snap.apply(batch)
                    if new is not snap:
                        snap = new
                        self._send(snap)

    def _batch(self, batch: list[Event] | None) -> None:
        if self._on_batch is not None:
            self._on_batch(batch)

    def _send(self, snap: Snapshot, up: bool | None = None) -> None:
        def deliver() -> None:
            self._publish(snap)
            if up is not None:
                self._set_up(up)
            if self._ready is not None:
                self._ready.set()

        self._call(deliver)

    def _status(self, up: bool) -> None:
        self._call(lambda: self._set_up(up))

    def _set_up(self, up: bool) -> None:
        self.up = up
        if self._on_status is not None:
            self._on_status(up)

    def _call(self, fn: Callable[[], None]) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop is closed: nobody to tell any more
            self._stop.set()
