"""What the store view carries over a store reset: the records of the hosts that
have not recovered yet (pure)."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from netplug.agent.reset_carry import carried, deletion, owner, refresh, settle
from netplug.ipam.schema import Attachments, Blocks, Hosts, Names, Networks, Vteps
from netplug.ipam.store.base import Event, KeyValue


def kv(key: str, value: bytes = b"{}", revision: int = 7) -> KeyValue:
    return KeyValue(key, value, revision, revision, 1)


def put(key: str, value: bytes = b"{}") -> Event:
    return Event("put", kv(key, value, 20))


BLOCK2 = Blocks.key("blue", ip_network("10.244.2.0/24"))
H2_RECORDS = {
    Hosts.key("h2"): kv(Hosts.key("h2")),
    Vteps.key("blue", "h2"): kv(Vteps.key("blue", "h2")),
    BLOCK2: kv(BLOCK2, b'{"host": "h2"}'),
    Attachments.key("blue", "h2", "web", "eth0"): kv(Attachments.key("blue", "h2", "web", "eth0")),
}
H1_RECORDS = {Hosts.key("h1"): kv(Hosts.key("h1")), Vteps.key("blue", "h1"): kv("x")}
CLUSTER = {Networks.key("blue"): kv(Networks.key("blue")), Names.key("db"): kv(Names.key("db"))}
BEFORE = {**H1_RECORDS, **H2_RECORDS, **CLUSTER}


@pytest.mark.parametrize(
    ("record", "host"),
    [
        (kv(Hosts.key("h2")), "h2"),
        (kv(Vteps.key("blue", "h2")), "h2"),
        (kv(BLOCK2, b'{"host": "h2"}'), "h2"),
        (kv(Attachments.key("blue", "h2", "web", "eth0")), "h2"),
        (kv(BLOCK2, b"not json"), None),
        (kv(Networks.key("blue")), None),
        (kv(Names.key("db")), None),
    ],
)
def test_owner(record, host):
    assert owner(record) == host


def test_a_host_with_no_record_after_the_reset_is_carried_whole():
    """Not its network or the names (no host writes them back), nor mine."""
    assert carried(BEFORE, {Hosts.key("h1"): kv(Hosts.key("h1"))}, "h1") == {"h2": H2_RECORDS}


def test_a_recovered_host_is_carried_by_its_host_record_alone_until_it_registers():
    after = {**H1_RECORDS, BLOCK2: kv(BLOCK2, b'{"host": "h2"}', 3)}
    assert carried(BEFORE, after, "h1") == {"h2": {Hosts.key("h2"): H2_RECORDS[Hosts.key("h2")]}}


def test_a_host_that_recovered_and_registered_is_not_carried():
    assert (
        carried(BEFORE, {**H1_RECORDS, Hosts.key("h2"): kv(Hosts.key("h2"), revision=3)}, "h1")
        == {}
    )


def test_what_the_store_writes_is_its_own_and_a_registration_ends_a_host_carry():
    carry = carried(BEFORE, H1_RECORDS, "h1")
    web = Attachments.key("blue", "h2", "web", "eth0")
    assert settle(carry, [put(web), put(Names.key("db"))], 21) == []
    assert web not in carry["h2"] and len(carry["h2"]) == 3
    gone = settle(carry, [put(Hosts.key("h2"))], 22)
    assert gone == [deletion(Vteps.key("blue", "h2"), 22), deletion(BLOCK2, 22)]
    assert carry == {}


def test_a_full_read_takes_what_it_holds_and_ends_the_carry_of_a_registered_host():
    carry = {"h2": dict(H2_RECORDS), "h3": {Hosts.key("h3"): kv(Hosts.key("h3"))}}
    refresh(carry, {BLOCK2: kv(BLOCK2), Hosts.key("h3"): kv(Hosts.key("h3"))})
    assert carry == {"h2": {k: v for k, v in H2_RECORDS.items() if k != BLOCK2}}
