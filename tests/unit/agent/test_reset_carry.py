"""What the store view carries over a store reset: the records of the hosts that
have not recovered yet (pure)."""

from __future__ import annotations

import json
from ipaddress import ip_network

import pytest

from netplug.agent.reset_carry import (
    SAVED_MAX_AGE,
    carried,
    deletion,
    grace_left,
    owner,
    refresh,
    settle,
)
from netplug.ipam.schema import Attachments, Blocks, Hosts, Names, Networks, Vteps
from netplug.ipam.store.base import Event, KeyValue


def kv(key: str, value: bytes = b"{}", revision: int = 7) -> KeyValue:
    return KeyValue(key, value, revision, revision, 1)


def put(key: str, value: bytes = b"{}") -> Event:
    return Event("put", kv(key, value, 20))


VTEP2, VTEP3 = Vteps.key("blue", "h2"), Vteps.key("blue", "h3")
BLOCK2 = Blocks.key("blue", ip_network("10.244.2.0/24"))
WEB2 = Attachments.key("blue", "h2", "web", "eth0")
WEB2_RECORD = json.dumps({"ips": [{"address": "10.244.2.5/24", "block": "10.244.2.0/24"}]})
H2_RECORDS = {
    Hosts.key("h2"): kv(Hosts.key("h2")),
    Vteps.key("blue", "h2"): kv(Vteps.key("blue", "h2")),
    BLOCK2: kv(BLOCK2, b'{"host": "h2"}'),
    WEB2: kv(WEB2, WEB2_RECORD.encode()),
}
H1_RECORDS = {Hosts.key("h1"): kv(Hosts.key("h1")), Vteps.key("blue", "h1"): kv("x")}
CLUSTER = {Networks.key("blue"): kv(Networks.key("blue")), Names.key("db"): kv(Names.key("db"))}
BEFORE = {**H1_RECORDS, **H2_RECORDS, **CLUSTER}


def but(records: dict, *keys: str) -> dict:
    return {k: v for k, v in records.items() if k not in keys}


@pytest.mark.parametrize(
    ("record", "host"),
    [
        (kv(Hosts.key("h2")), "h2"),
        (kv(Vteps.key("blue", "h2")), "h2"),
        (kv(BLOCK2, b'{"host": "h2"}'), "h2"),
        (kv(WEB2), "h2"),
        (kv(BLOCK2, b"not json"), None),
        (kv(Networks.key("blue")), None),
        (kv(Names.key("db")), None),
    ],
)
def test_owner(record, host):
    assert owner(record) == host


def test_a_host_with_no_record_after_the_reset_is_carried_whole():
    """Not its network or the names (no host writes them back), nor mine."""
    assert carried(BEFORE, H1_RECORDS, "h1") == {"h2": H2_RECORDS}


def test_a_host_halfway_through_its_recover_is_carried_key_by_key():
    """Its VTEP and block are back, its container not yet: carried until its
    agent registers (after its recover is done)."""
    after = {**H1_RECORDS, BLOCK2: kv(BLOCK2, b'{"host": "h2"}', 3), VTEP2: kv(VTEP2)}
    assert carried(BEFORE, after, "h1") == {"h2": but(H2_RECORDS, BLOCK2, VTEP2)}


def test_a_host_that_recovered_and_registered_is_not_carried():
    assert (
        carried(BEFORE, {**H1_RECORDS, Hosts.key("h2"): kv(Hosts.key("h2"), revision=3)}, "h1")
        == {}
    )


def test_a_container_in_a_block_another_host_took_is_not_carried():
    """h3 claimed h2's free block after the reset: it may hand out web's address."""
    after = {**H1_RECORDS, BLOCK2: kv(BLOCK2, b'{"host": "h3"}', 3)}
    assert carried(BEFORE, after, "h1") == {"h2": but(H2_RECORDS, BLOCK2, WEB2)}


def test_what_the_store_writes_is_its_own_and_a_registration_ends_a_host_carry():
    carry = carried(BEFORE, H1_RECORDS, "h1")
    assert settle(carry, [put(WEB2), put(Names.key("db"))], 21) == []
    assert carry == {"h2": but(H2_RECORDS, WEB2)}
    gone = settle(carry, [put(Hosts.key("h2"))], 22)
    assert gone == [deletion(VTEP2, 22), deletion(BLOCK2, 22)]
    assert carry == {}


def test_a_block_put_for_another_host_or_released_ends_its_containers_carry():
    for event in (put(BLOCK2, b'{"host": "h3"}'), Event("delete", kv(BLOCK2, b"", 20))):
        carry = carried(BEFORE, H1_RECORDS, "h1")
        assert settle(carry, [event], 21) == [deletion(WEB2, 21)]
        assert carry == {"h2": but(H2_RECORDS, BLOCK2, WEB2)}


def test_a_block_put_back_for_its_host_keeps_carrying_its_containers():
    carry = carried(BEFORE, H1_RECORDS, "h1")
    assert settle(carry, [put(BLOCK2, b'{"host": "h2"}')], 21) == []
    assert carry == {"h2": but(H2_RECORDS, BLOCK2)}


def test_a_host_whose_records_all_came_back_is_carried_no_more():
    """A host with no host record (no agent, or dead before the reset): the last
    of its keys written ends its carry, else the grace would be its end."""
    carry = {"h3": {VTEP3: kv(VTEP3)}}
    assert settle(carry, [put(VTEP3)], 21) == []
    assert carry == {}


def test_a_full_read_takes_what_it_holds_and_ends_the_carry_of_a_registered_host():
    carry = {"h2": dict(H2_RECORDS), "h3": {Hosts.key("h3"): kv(Hosts.key("h3"))}}
    refresh(carry, {VTEP2: kv(VTEP2), Hosts.key("h3"): kv(Hosts.key("h3"))})
    assert carry == {"h2": but(H2_RECORDS, VTEP2)}
    refresh(carry, dict(but(H2_RECORDS, Hosts.key("h2"))))
    assert carry == {"h2": {Hosts.key("h2"): H2_RECORDS[Hosts.key("h2")]}}


GRACE = 600.0


@pytest.mark.parametrize(
    ("since", "saved", "left"),
    [
        (None, 1000.0, GRACE),  # begins now, from a read saved just now
        (None, 1000.0 - SAVED_MAX_AGE - 1, 0.0),  # saved a day before: too old to carry
        (800.0, 800.0, GRACE - 200),  # began 200 s ago (an agent restarted meanwhile)
        (300.0, 300.0, 0.0),  # its grace ran out
        (5000.0, 5000.0, GRACE),  # began "in the future": the clock stepped back
    ],
)
def test_the_grace_left_never_exceeds_the_grace(since, saved, left) -> None:
    assert grace_left(GRACE, 1000.0, since, saved) == left
