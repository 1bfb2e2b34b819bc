"""Host registration on both real stores (no root): an agent restarted on the
same host takes its predecessor's record over without a moment when the record
is absent (other hosts would drop this one from the overlay), and a live agent
of another instance keeps its name."""

from __future__ import annotations

from contextlib import closing

import pytest

from netplug.agent.registration import HostNameTaken, HostRegistration
from netplug.ipam.schema import Hosts
from netplug.ipam.store.base import Event, Store


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
