"""Host registration on both real stores (no root): an agent restarted on the
same host takes its predecessor's record over without a moment when the record
is absent (other hosts would drop this one from the overlay), a live agent
of another instance keeps its name, and a record gone from the store is put
back at once rather than at the lease's next renewal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing, contextmanager

import pytest

from netplug.agent.registration import HostNameTaken, HostRegistration, record_present
from netplug.agent.store_view import Delta, Full, StoreView
from netplug.agent.supervisor import Backoff, Supervisor
from netplug.ipam.schema import Hosts
from netplug.ipam.store.base import Event, KeyValue, Store, StoreReset

from waiting import wait_for


def events_since(store: Store, revision: int) -> list[Event]:
    """Every event under the hosts prefix after ``revision``, until the watch goes quiet."""
    found: list[Event] = []
    with closing(store.watch(Hosts.PREFIX, revision + 1, timeout=0.2)) as batches:
        for batch in batches:
            if not batch:
                break
            found += batch
    return found


def test_a_restarted_agent_moves_the_record_without_deleting_it(store) -> None:
    first = HostRegistration(store, "h1", "192.0.2.11", ttl=30)
    first.acquire()
    before = store.status()

    second = HostRegistration(store, "h1", "192.0.2.11", ttl=30)  # same instance: a restart
    second.acquire()

    events = events_since(store, before)
    assert [e.type for e in events] == ["put"], events  # the old code: delete, then put
    held = store.get(Hosts.key("h1"))
    assert held is not None and held.lease == second.lease != first.lease


def test_another_live_agent_keeps_the_name(store) -> None:
    first = HostRegistration(store, "h1", "192.0.2.11", ttl=30)
    first.acquire()
    other = HostRegistration(store, "h1", "192.0.2.12", ttl=30)
    other.instance = "another-machine/1"
    with pytest.raises(HostNameTaken, match="held by another live netplugd"):
        other.acquire()
    held = store.get(Hosts.key("h1"))
    assert held is not None and held.lease == first.lease
    assert Hosts.decode(held.value).vtep == "192.0.2.11"


def test_the_record_counts_as_present_as_the_last_word_on_it_says() -> None:
    key, other = Hosts.key("h1"), Hosts.key("h10")  # h10's key starts with h1's
    mine = KeyValue(key, b"{}", 1, 1, 1)
    put, gone = Event("put", mine), Event("delete", KeyValue(key, b"", 2, 2, 0))
    theirs = Event("delete", KeyValue(other, b"", 3, 3, 0))
    assert not record_present(True, [Full(1, ())], key)
    assert record_present(False, [Full(1, (mine,))], key)
    assert not record_present(True, [Delta((put, gone))], key)
    assert record_present(False, [Full(1, ()), Delta((gone, put))], key)
    assert record_present(True, [Delta((theirs,))], key)
    assert not record_present(False, [], key)


def registered(store: Store) -> HostRegistration:
    registration = HostRegistration(store, "h1", "192.0.2.11", ttl=30)  # renewal: 10 s
    registration.acquire()
    return registration


@contextmanager
def following(store: Store, registration: HostRegistration) -> Iterator[StoreView]:
    """The registration's parts (its renewal and ``follow``) and a store view, as
    netplugd runs them, until the block ends."""
    view, supervisor = StoreView(store), Supervisor(Backoff(initial=0.02))
    feed = view.subscribe("host-record", (Hosts.key("h1"),))
    supervisor.start("registration", registration.keep_alive)
    supervisor.start("host-record", feed.runs(registration.follow))
    supervisor.start("store-view", view.run)
    try:
        yield view
    finally:
        supervisor.stop(5)


def back_within(store: Store, seconds: float) -> KeyValue | None:
    """The host record once it is in the store again; None if not within ``seconds``."""
    wait_for(lambda: store.get(Hosts.key("h1")) is not None, timeout=seconds)
    return store.get(Hosts.key("h1"))


def test_a_record_gone_from_the_store_is_put_back_at_once(store) -> None:
    # As the lease of a reset store is gone, or `hosts remove --force`: the other
    # hosts drop this one's peers until its renewal (10 s here) registers again.
    registration = registered(store)
    old_lease = registration.lease
    with following(store, registration) as view:
        assert wait_for(lambda: view.up)  # a delete it watches, not a first read
        store.delete(Hosts.key("h1"))
        held = back_within(store, 2)
    assert held is not None and held.lease == registration.lease != old_lease
    assert Hosts.decode(held.value).vtep == "192.0.2.11"


def test_a_record_missing_from_the_views_first_read_is_put_back(store) -> None:
    # As after `netplugctl recover` on a reset store: the view's first read since.
    registration = registered(store)
    store.delete(Hosts.key("h1"))
    with following(store, registration):
        assert back_within(store, 2) is not None


def test_a_lost_lease_is_not_registered_again_in_a_store_this_host_has_not_recovered(
    store, caplog
) -> None:
    """An agent whose store was reset writes no host record there before its host
    recovered: the other hosts' agents take a host record for the end of its
    recover, and stop carrying its containers (``reset_carry``)."""
    refused = "store was reset: run `netplugctl recover`"

    def trust() -> None:
        raise StoreReset(refused)

    registration = HostRegistration(store, "h1", "192.0.2.11", ttl=0.3, trust=trust)
    registration.acquire()
    store.revoke(registration.lease)  # as the reset took it
    supervisor = Supervisor(Backoff(initial=0.02, maximum=0.1))
    supervisor.start("registration", registration.keep_alive)
    try:
        assert wait_for(lambda: refused in caplog.text, timeout=5)
        time.sleep(0.5)  # four more renewals: still nothing written, logged once
    finally:
        supervisor.stop(5)
    assert store.get(Hosts.key("h1")) is None
    assert caplog.text.count(refused) == 1
