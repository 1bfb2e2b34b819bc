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
import logging
import threading
from collections.abc import Callable

from netplug.dns.registry import Snapshot
from netplug.dns.writer import read_snapshot
from netplug.ipam.schema import ROOT
from netplug.ipam.store.base import Event, Store
from netplug.ipam.store.follow import RETRY_MAX, WATCH_TIMEOUT, Following

log = logging.getLogger(__name__)


class Follower(Following):
    """Calls ``publish(snapshot)`` on the event loop for each new snapshot.

    ``on_status(up)`` (also on the loop) tells whether the store answers.
    Start and stop from the loop that should receive them. (netplugd follows
    the store through its own ``agent.store_view``, which feeds its DNS too.)
    """

    def __init__(
        self,
        store: Store,
        publish: Callable[[Snapshot], None],
        on_status: Callable[[bool], None] | None = None,
    ) -> None:
        self.store, self.prefix, self.name = store, ROOT, "registry"
        self._snap = Snapshot()
        self._publish = publish
        self._on_status = on_status
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self.up = False

    async def start(self) -> None:
        """Follow in a thread of its own."""
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
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
                self.follow(self._stop)
            except Exception:  # a bug must not end following for good
                log.exception("registry follower failed; retrying")
                self._stop.wait(RETRY_MAX)

    def _read(self) -> int:
        self._snap = read_snapshot(self.store)
        self._send(self._snap, up=True)
        return self._snap.revision

    def _apply(self, batch: list[Event]) -> None:
        new = self._snap.apply(batch)
        if new is not self._snap:
            self._snap = new
            self._send(new)

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
