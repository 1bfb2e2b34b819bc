"""Following the store: changes arrive within a poll; a failing store keeps the last snapshot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from dns_testing import attachment, registration

from netplug.dns.follow import Follower
from netplug.dns.registry import Snapshot
from netplug.ipam.store.base import StoreUnavailable
from netplug.ipam.store.sqlite import SQLiteStore


async def wait_until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


class FlakyStore:
    """A SQLiteStore that raises StoreUnavailable while ``down``."""

    def __init__(self, store: SQLiteStore) -> None:
        self.inner, self.down = store, False

    def __getattr__(self, name: str):
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.down:
                raise StoreUnavailable("down for the test")
            if name == "watch":
                return self._watch(attr(*args, **kwargs))
            return attr(*args, **kwargs)

        return call

    def _watch(self, events):
        for batch in events:
            if self.down:
                raise StoreUnavailable("down for the test")
            yield batch


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(str(tmp_path / "netplug.db"), poll_interval=0.002)
    yield s
    s.close()


@pytest.fixture
async def followed(
    store: SQLiteStore,
) -> AsyncIterator[tuple[FlakyStore, list[Snapshot], Follower]]:
    flaky = FlakyStore(store)
    seen: list[Snapshot] = []
    follower = Follower(flaky, seen.append)  # type: ignore[arg-type]
    await follower.start()
    try:
        assert await follower.wait_ready(3)
        yield flaky, seen, follower
    finally:
        await follower.stop()


async def test_changes_arrive(followed) -> None:
    flaky, seen, follower = followed
    assert follower.up and seen[-1].nodes == {}
    kv = attachment("blue", "h1", "c1", ["web"], ["10.244.1.5"])
    t0 = time.monotonic()
    flaky.inner.put(kv.key, kv.value)
    await wait_until(lambda: "web.blue" in seen[-1].nodes)
    assert time.monotonic() - t0 < 2.0  # one watch poll (10 ms) when the machine is quiet
    flaky.inner.delete(kv.key)
    await wait_until(lambda: "web.blue" not in seen[-1].nodes)
    count = len(seen)
    flaky.inner.put("/netplug/ips/blue/10.244.1.0/24/10.244.1.9", b"{}")  # not DNS: no new snapshot
    reg = registration("api", {"addresses": ["10.1.2.3"]})
    flaky.inner.put(reg.key, reg.value)
    await wait_until(lambda: "api" in seen[-1].nodes)
    assert len(seen) == count + 1


async def test_store_down_keeps_the_last_snapshot(followed) -> None:
    flaky, seen, follower = followed
    reg = registration("api", {"addresses": ["10.1.2.3"]})
    flaky.inner.put(reg.key, reg.value)
    await wait_until(lambda: "api" in seen[-1].nodes)
    flaky.down = True
    await wait_until(lambda: not follower.up)
    assert "api" in seen[-1].nodes  # still answering from what it holds
    other = registration("db", {"addresses": ["10.1.2.4"]})
    flaky.inner.put(other.key, other.value)
    flaky.down = False
    await wait_until(lambda: follower.up and "db" in seen[-1].nodes, timeout=5)


async def test_lease_expiry_removes_the_name(followed) -> None:
    flaky, seen, _ = followed
    reg = registration("temp", {"addresses": ["10.1.2.3"], "ttl": 1})
    flaky.inner.put(reg.key, reg.value, flaky.inner.grant(0.3))
    # A stalled loop may see the name come and go in one go: any snapshot had it.
    await wait_until(lambda: any("temp" in snap.nodes for snap in seen))
    await wait_until(lambda: "temp" not in seen[-1].nodes, timeout=5)
