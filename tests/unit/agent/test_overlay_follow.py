"""The overlay rides the DNS follower's store watch (no root: the kernel side,
reconcile's netlink half, is left out; read_view and the wiring are real)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from netplug.agent.overlay import Overlay, View, read_view
from netplug.dns.follow import Follower
from netplug.ipam.schema import Hosts
from netplug.ipam.store.sqlite import SQLiteStore


class ViewsOnly(Overlay):
    """Reads the store as reconcile does and records it, programming nothing."""

    def __init__(self, store: SQLiteStore) -> None:
        super().__init__(store, "h1")
        self.views: list[View] = []
        self.follower = Follower(store, lambda snapshot: None, on_batch=self.notice)

    def reconcile(self) -> View:
        view = read_view(self.store)
        self.views.append(view)
        return view

    async def settled(self) -> int:
        """The number of reconciles once no more are coming."""
        while True:
            seen = len(self.views)
            await asyncio.sleep(0.3)  # several watch polls
            if len(self.views) == seen:
                return seen


async def eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@pytest.fixture
async def overlay(tmp_path) -> AsyncIterator[ViewsOnly]:
    """The overlay's thread, reconciled once; its follower is the test's to start."""
    store = SQLiteStore(str(tmp_path / "netplug.db"))
    overlay = ViewsOnly(store)
    stop = threading.Event()
    thread = threading.Thread(target=overlay.follow, args=(stop,), daemon=True)
    try:
        thread.start()
        assert await eventually(lambda: len(overlay.views) == 1)
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
    assert await eventually(lambda: len(overlay.views) >= 2)
    before = await overlay.settled()
    overlay.store.put("/netplug/ips/blue/10.244.1.0/24/10.244.1.7", b'{"host": "h1"}')
    assert await overlay.settled() == before
    overlay.store.put(Hosts.key("h2"), b'{"vtep": "192.0.2.2"}')
    assert await eventually(lambda: len(overlay.views) > before)
    assert overlay.views[-1].live_hosts == {"h2"}


async def test_a_change_before_the_watch_began_is_reconciled(overlay) -> None:
    """The overlay read the store, then a host joined, then the follower read it:
    no batch will ever carry that join, so the follower's read must count."""
    overlay.store.put(Hosts.key("h2"), b'{"vtep": "192.0.2.2"}')
    await overlay.follower.start()
    assert await eventually(lambda: overlay.views[-1].live_hosts == {"h2"})
