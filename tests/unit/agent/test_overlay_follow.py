"""The overlay rides the DNS follower's store watch (no root: the kernel side,
reconcile's netlink half, is left out; read_view and the wiring are real).

Every wait is for an event - a reconcile, or a batch the watch delivered -
bounded by WAIT: no test sleeps to let things settle."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from netplug.agent.overlay import Overlay, View, read_view
from netplug.dns.follow import Follower
from netplug.ipam.schema import Hosts
from netplug.ipam.store.base import Event
from netplug.ipam.store.sqlite import SQLiteStore

WAIT = 5.0


class CountingEvent(threading.Event):
    """The overlay's "something changed" flag, counting the times it is raised."""

    def __init__(self) -> None:
        super().__init__()
        self.raised = 0

    def set(self) -> None:
        self.raised += 1
        super().set()


class ViewsOnly(Overlay):
    """Reads the store as reconcile does and records it, programming nothing; the
    test waits on ``happened`` for each reconcile and each watch batch."""

    def __init__(self, store: SQLiteStore) -> None:
        super().__init__(store, "h1")
        self._changed = self.wakeups = CountingEvent()
        self.views: list[View] = []
        self.batches: list[list[Event] | None] = []
        self.happened = threading.Condition()
        self.follower = Follower(store, lambda snapshot: None, on_batch=self.notice)

    def reconcile(self) -> View:
        view = read_view(self.store)
        with self.happened:
            self.views.append(view)
            self.happened.notify_all()
        return view

    def notice(self, batch: list[Event] | None) -> None:
        super().notice(batch)  # decided (on the follower's thread) before it is recorded
        with self.happened:
            self.batches.append(batch)
            self.happened.notify_all()

    def delivered(self, key: str) -> Callable[[], bool]:
        """Whether the watch has handed the overlay a batch that holds ``key``."""
        return lambda: any(e.kv.key == key for b in self.batches if b for e in b)


async def until(overlay: ViewsOnly, predicate: Callable[[], bool]) -> bool:
    """Whether ``predicate`` holds within WAIT s, re-checked at each reconcile and batch."""

    def wait() -> bool:
        with overlay.happened:
            return overlay.happened.wait_for(predicate, WAIT)

    return await asyncio.to_thread(wait)


@pytest.fixture
async def overlay(tmp_path) -> AsyncIterator[ViewsOnly]:
    """The overlay's thread, reconciled once; its follower is the test's to start."""
    store = SQLiteStore(str(tmp_path / "netplug.db"))
    overlay = ViewsOnly(store)
    stop = threading.Event()
    thread = threading.Thread(target=overlay.follow, args=(stop,), daemon=True)
    try:
        thread.start()
        assert await until(overlay, lambda: len(overlay.views) == 1)
        yield overlay
    finally:
        stop.set()
        await overlay.follower.stop()
        thread.join(5)
        store.close()
    assert not thread.is_alive()


async def test_overlay_changes_reconcile_and_container_events_do_not(overlay) -> None:
    await overlay.follower.start()
    assert await overlay.follower.wait_ready(5)
    # The follower's first read triggers one reconcile after the start's own.
    assert await until(overlay, lambda: None in overlay.batches and len(overlay.views) >= 2)
    container = "/netplug/ips/blue/10.244.1.0/24/10.244.1.7"
    before = overlay.wakeups.raised
    overlay.store.put(container, b'{"host": "h1"}')
    assert await until(overlay, overlay.delivered(container))
    assert overlay.wakeups.raised == before  # the batch woke nothing
    overlay.store.put(Hosts.key("h2"), b'{"vtep": "192.0.2.2"}')
    assert await until(overlay, overlay.delivered(Hosts.key("h2")))
    assert overlay.wakeups.raised == before + 1
    assert await until(overlay, lambda: overlay.views[-1].live_hosts == {"h2"})


async def test_a_change_before_the_watch_began_is_reconciled(overlay) -> None:
    """The overlay read the store, then a host joined, then the follower read it:
    no batch will ever carry that join, so the follower's read must count."""
    overlay.store.put(Hosts.key("h2"), b'{"vtep": "192.0.2.2"}')
    await overlay.follower.start()
    assert await until(overlay, lambda: overlay.views[-1].live_hosts == {"h2"})
