"""Deferred releases against a real SQLite store, and a store that is down."""

import json
import threading
import time
from ipaddress import ip_network

import pytest

from netplug.ipam.allocations import IPAM, Pool
from netplug.ipam.pending import PendingReleases
from netplug.ipam.store.base import StoreUnavailable
from netplug.ipam.store.sqlite import SQLiteStore

V4 = Pool(ip_network("10.244.0.0/16"), 24)


@pytest.fixture
def ipam(tmp_path):
    store = SQLiteStore(str(tmp_path / "netplug.db"))
    try:
        yield IPAM(store, "node-1")
    finally:
        store.close()


class DownIPAM:
    """An IPAM whose store does not answer."""

    def lookup(self, *args):
        raise StoreUnavailable("store down")

    release = lookup


def test_replay_releases_once_the_store_answers(ipam, tmp_path):
    ipam.allocate("blue", [V4], "c1", "eth0", netns="/run/netns/a")
    pending = PendingReleases(str(tmp_path / "run"), "node-1")
    assert not pending
    pending.record("blue", "c1", "eth0", "/run/netns/a")
    assert pending
    assert pending.replay(DownIPAM()) == 0 and pending  # kept while the store is down
    assert pending.replay(ipam) == 1
    assert not pending
    assert ipam.lookup("blue", "c1", "eth0") is None


def test_replay_spares_a_newer_attachment_of_the_same_container(ipam, tmp_path):
    pending = PendingReleases(str(tmp_path / "run"), "node-1")
    pending.record("blue", "c1", "eth0", "/run/netns/old")
    ipam.allocate("blue", [V4], "c1", "eth0", netns="/run/netns/new")
    assert pending.replay(ipam) == 1
    assert ipam.lookup("blue", "c1", "eth0") is not None


def test_replay_of_an_already_released_attachment_is_settled(ipam, tmp_path):
    pending = PendingReleases(str(tmp_path / "run"), "node-1")
    pending.record("blue", "gone", "eth0", "")
    assert pending.replay(ipam) == 1 and not pending


def test_an_entry_without_a_namespace_releases_the_attachment(ipam, tmp_path):
    """A DEL may come without CNI_NETNS; its deferred release must still free the addresses."""
    ipam.allocate("blue", [V4], "c1", "eth0", netns="/run/netns/a")
    pending = PendingReleases(str(tmp_path / "run"), "node-1")
    pending.record("blue", "c1", "eth0", "")
    assert pending.replay(ipam) == 1 and not pending
    assert ipam.lookup("blue", "c1", "eth0") is None


def test_a_torn_line_is_set_aside_and_the_rest_replayed(ipam, tmp_path):
    ipam.allocate("blue", [V4], "c1", "eth0", netns="/run/netns/a")
    pending = PendingReleases(str(tmp_path / "run"), "node-1")
    pending.record("blue", "c1", "eth0", "/run/netns/a")
    with open(pending.path, "a") as f:
        f.write('{"network": "blue", "contai\n')
    assert pending.replay(ipam) == 2 and not pending
    assert ipam.lookup("blue", "c1", "eth0") is None
    corrupt = pending.path.with_name(pending.path.name + ".corrupt")
    assert corrupt.read_text() == '{"network": "blue", "contai\n'


class CountingDownIPAM(DownIPAM):
    def __init__(self) -> None:
        self.calls = 0

    def release(self, *args):
        self.calls += 1
        raise StoreUnavailable("store down")


def test_replay_stops_at_the_first_entry_the_store_cannot_take(tmp_path):
    """Against a dead store every entry would wait out the same timeout."""
    pending = PendingReleases(str(tmp_path / "run"), "node-1")
    for i in range(20):
        pending.record("blue", f"c{i}", "eth0", "")
    down = CountingDownIPAM()
    assert pending.replay(down) == 0
    assert down.calls == 1
    assert len(pending.path.read_text().splitlines()) == 20


class SlowIPAM:
    """Releases through ``ipam`` once the test lets it: a store that answers slowly."""

    def __init__(self, ipam: IPAM) -> None:
        self.ipam = ipam
        self.entered = threading.Event()
        self.go_on = threading.Event()

    def release(self, *args):
        self.entered.set()
        assert self.go_on.wait(10)
        return self.ipam.release(*args)


def test_a_release_recorded_during_a_replay_neither_waits_nor_is_lost(ipam, tmp_path):
    ipam.allocate("blue", [V4], "old", "eth0", netns="/run/netns/a")
    pending = PendingReleases(str(tmp_path / "run"), "node-1")
    pending.record("blue", "old", "eth0", "/run/netns/a")
    slow = SlowIPAM(ipam)
    replayed: list[int] = []
    replay = threading.Thread(target=lambda: replayed.append(pending.replay(slow)))
    replay.start()
    try:
        assert slow.entered.wait(5)  # the replay is inside a store call
        started = time.monotonic()
        pending.record("blue", "new", "eth0", "/run/netns/b")  # a DEL during the replay
        assert time.monotonic() - started < 1
        assert PendingReleases(str(tmp_path / "run"), "node-1").replay(ipam) == 0  # one at a time
    finally:
        slow.go_on.set()
        replay.join(10)
    assert replayed == [1]
    assert ipam.lookup("blue", "old", "eth0") is None
    (left,) = pending.path.read_text().splitlines()
    assert json.loads(left)["containerID"] == "new"
