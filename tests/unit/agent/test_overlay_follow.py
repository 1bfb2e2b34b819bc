"""The overlay as a part of the agent's store view (no root: the kernel half,
``Overlay.program``, records the views instead; the store, the view, the
feed and the supervisor are real), and ``view_of``, the pure reading of its
records. Waits are on the recorded views."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from ipaddress import ip_network

import pytest

from netplug.agent import overlay as agent_overlay
from netplug.agent.overlay import Overlay, View, view_of
from netplug.agent.overlay_plan import Vtep
from netplug.agent.records import BadRecords
from netplug.agent.store_view import StoreView
from netplug.agent.supervisor import Backoff, Supervisor
from netplug.ipam.schema import ROOT, Attachments, Blocks, Hosts, Vteps
from netplug.ipam.store.base import KeyValue
from netplug.ipam.store.sqlite import SQLiteStore

VTEP = b'{"vtep": "192.0.2.%d", "mac": "02:00:00:00:00:0%d", "vni": 42}'


class ViewsOnly(Overlay):
    """Reconciles as the agent does, recording each view instead of programming it."""

    def __init__(self) -> None:
        self.counted: list[str] = []
        super().__init__("h1", bad_records=BadRecords(self.counted.append))
        self.views: list[View] = []
        self._cond = threading.Condition()

    def program(self, view: View) -> None:
        with self._cond:
            self.views.append(view)
            self._cond.notify_all()

    def wait_for(self, check: Callable[[View], bool], timeout: float = 5.0) -> View:
        with self._cond:
            assert self._cond.wait_for(lambda: self.views and check(self.views[-1]), timeout)
            return self.views[-1]


@pytest.fixture
def store(tmp_path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "netplug.db"), poll_interval=0.002)
    yield s
    s.close()


@pytest.fixture
def follow(store) -> Iterator[Callable[[], ViewsOnly]]:
    """Start the overlay and the view under a supervisor, as netplugd does."""
    supervisor = Supervisor(Backoff(initial=0.02, maximum=0.1))

    def start() -> ViewsOnly:
        overlay = ViewsOnly()
        view = StoreView(store)
        feed = view.subscribe("overlay", agent_overlay.WATCHED)
        supervisor.start("overlay", feed.runs(overlay.follow))
        supervisor.start("store-view", view.run)
        return overlay

    try:
        yield start
    finally:
        supervisor.stop(5)


def test_an_overlay_change_reconciles(store, follow) -> None:
    overlay = follow()
    overlay.wait_for(lambda view: view.live_hosts == set())
    store.put(Hosts.key("h2"), b'{"vtep": "192.0.2.2"}')
    assert overlay.wait_for(lambda view: view.live_hosts == {"h2"})


def test_a_change_before_the_view_began_is_reconciled(store, follow) -> None:
    store.put(Hosts.key("h2"), b'{"vtep": "192.0.2.2"}')
    overlay = follow()
    overlay.wait_for(lambda view: view.live_hosts == {"h2"})


def test_a_malformed_record_is_skipped_reported_once_and_forgotten_once_fixed(
    store, follow
) -> None:
    """A broken VTEP record in one network used to stop the overlay for all of them."""
    bad = Vteps.key("blue", "ghost")
    store.put(Vteps.key("red", "h2"), VTEP % (2, 2))
    store.put(bad, b"not json")
    overlay = follow()
    view = overlay.wait_for(lambda view: "red" in view.vteps)
    assert [v.host for v in view.vteps["red"]] == ["h2"] and "blue" not in view.vteps
    assert list(view.bad) == [bad] and view.bad[bad][1].startswith("MalformedRecord: VTEP record")
    assert overlay.bad_records.health() == [
        {"part": "overlay", "key": bad, "error": view.bad[bad][1]}
    ]

    store.put(Hosts.key("h2"), b"{}")  # another reconcile: the same record, not counted again
    overlay.wait_for(lambda view: view.live_hosts == {"h2"})
    assert overlay.counted == ["overlay"]
    store.put(bad, VTEP % (3, 3))
    overlay.wait_for(lambda view: "blue" in view.vteps)
    assert overlay.bad_records.health() == []


def kv(key: str, value: bytes, revision: int = 1) -> KeyValue:
    return KeyValue(key, value, revision, revision, 1, 0)


def test_view_of_reads_every_kind_and_ignores_other_keys() -> None:
    view = view_of(
        [
            kv(Hosts.key("h2"), b"{}"),
            kv(Vteps.key("red", "h2"), VTEP % (2, 2)),
            kv(Blocks.key("red", ip_network("10.0.0.0/24")), b'{"host": "h2"}'),
            kv(Attachments.key("red", "h2", "c1", "eth0"), b"not json"),  # not the overlay's
        ]
    )
    assert view == View(
        {"h2"},
        {"red": [Vtep("red", "h2", "192.0.2.2", "02:00:00:00:00:02", 42)]},
        {"red": {ip_network("10.0.0.0/24"): "h2"}},
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (Vteps.key("blue", "h2"), b"[]"),  # JSON, not an object
        (Vteps.key("blue", "h2"), b'{"vtep": "192.0.2.2"}'),  # fields missing
        (f"{ROOT}vteps/blue", VTEP % (2, 2)),  # a key without a host
        (Blocks.key("blue", ip_network("10.0.0.0/24")), b'{"owner": "h2"}'),
        (f"{ROOT}blocks/blue/not-a-cidr", b'{"host": "h2"}'),
        (Blocks.key("blue", ip_network("10.0.0.0/24")), b"\xff"),  # not even text
    ],
)
def test_view_of_skips_each_kind_of_malformed_record(key, value) -> None:
    view = view_of([kv(Vteps.key("red", "h1"), VTEP % (1, 1)), kv(key, value, 7)])
    assert list(view.bad) == [key] and view.bad[key][0] == 7
    assert [v.host for v in view.vteps["red"]] == ["h1"]
