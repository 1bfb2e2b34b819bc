"""The pure half of segmentation: store records to the table's inputs, and whether
a host needs the table at all."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface, ip_network

from netplug.cni import segmentation
from netplug.cni.segmentation import Reader, inputs, needed, network_info
from netplug.ipam.schema import (
    Allocation,
    Attachment,
    Attachments,
    NetworkRecord,
    Networks,
    Policies,
)
from netplug.ipam.store.base import Event, KeyValue
from netplug.policy.model import parse
from netplug.policy.plan import Endpoint, NetworkInfo

RED = NetworkRecord("10.1.0.0/16", "fd01::/48", 7, "d", 24, 64)
OPEN = NetworkRecord("10.3.0.0/16", "", 8, "d", 24, 0, isolate=False)
WEB = Attachment(
    "red",
    "h1",
    "c1",
    "eth0",
    (
        Allocation(ip_interface("10.1.0.5/24"), ip_address("10.1.0.1"), ip_network("10.1.0.0/24")),
        Allocation(ip_interface("fd01::5/64"), ip_address("fd01::1"), ip_network("fd01::/64")),
    ),
    ("web", "www"),
)
POLICY = parse('{"name": "p", "network": "red", "select": {}, "ingress": []}', None)[0]


def kv(key: str, value: bytes, revision: int = 3) -> KeyValue:
    return KeyValue(key, value, revision, revision, 1)


def test_records_become_networks_endpoints_and_policies():
    found = inputs(
        [
            kv(Networks.key("red"), Networks.encode(RED)),
            kv(Networks.key("open"), Networks.encode(OPEN)),
            kv(WEB.key, Attachments.encode(WEB)),
            kv(Policies.key("p"), Policies.encode(POLICY)),
            kv("/netplug/hosts/h1", b"{}"),  # not followed: ignored
        ]
    )
    assert found.networks == {
        "red": NetworkInfo("red", (ip_network("10.1.0.0/16"), ip_network("fd01::/48")), True),
        "open": NetworkInfo("open", (ip_network("10.3.0.0/16"),), False),
    }
    assert found.endpoints == {
        WEB.key: Endpoint(
            "red", "h1", (ip_address("10.1.0.5"), ip_address("fd01::5")), frozenset({"web", "www"})
        )
    }
    assert list(found.policies.values()) == [POLICY]
    assert found.bad == {}


def test_an_unreadable_record_is_skipped_and_named():
    found = inputs(
        [
            kv(Networks.key("red"), b"{not json", 9),
            kv(Attachments.key("red", "h1", "c2", "eth0"), b'{"ips": 5}', 10),
            kv(Policies.key("q"), b'{"name": "q"}', 11),
            kv(WEB.key, Attachments.encode(WEB)),
        ]
    )
    assert set(found.bad) == {
        Networks.key("red"),
        Attachments.key("red", "h1", "c2", "eth0"),
        Policies.key("q"),
    }
    assert [revision for revision, _ in found.bad.values()] == [9, 10, 11]
    assert list(found.endpoints) == [WEB.key] and found.networks == {}


def test_a_reader_decodes_each_record_once_per_revision_and_value(monkeypatch):
    red = kv(Networks.key("red"), Networks.encode(RED))
    web = kv(WEB.key, Attachments.encode(WEB))
    expected = inputs([red, web])
    decoded: list[str] = []
    parse = segmentation._parse
    monkeypatch.setattr(segmentation, "_parse", lambda kv: decoded.append(kv.key) or parse(kv))
    reader = Reader()
    first = reader.inputs([red, web])
    assert first == expected and decoded == [red.key, WEB.key]
    moved = Attachment("red", "h1", "c1", "eth0", WEB.allocations[:1], ("web",))
    again = reader.inputs([red, kv(WEB.key, Attachments.encode(moved), 4)])
    assert decoded[2:] == [WEB.key]  # only the record that changed
    assert again.networks["red"] is first.networks["red"]  # the same object, not a copy
    assert again.endpoints[WEB.key].addresses == (ip_address("10.1.0.5"),)
    reset = reader.inputs([kv(WEB.key, b"{not json", 4)])  # a store reset reuses revision 4
    assert decoded[3:] == [WEB.key] and list(reset.bad) == [WEB.key] and not reset.networks
    assert reader.inputs([red]).networks == first.networks  # a key that went is decoded anew
    assert decoded[4:] == [red.key]


def ep(network: str, host: str) -> Endpoint:
    return Endpoint(network, host, (ip_address("10.9.9.9"),))


NETS = {"red": network_info("red", RED), "open": network_info("open", OPEN)}


def test_a_host_needs_the_table_for_a_local_isolated_or_governed_network():
    assert needed(NETS, [], [ep("red", "h1")], "h1")  # isolated, local
    assert not needed(NETS, [], [ep("red", "h2")], "h1")  # isolated, elsewhere only
    assert not needed(NETS, [], [ep("open", "h1")], "h1")  # opted out, no policy
    open_policy = parse('{"name": "o", "network": "open", "select": {}}', None)
    assert needed(NETS, open_policy, [ep("open", "h1")], "h1")  # opted out, governed
    assert not needed(NETS, [POLICY], [], "h1")  # nothing local


def test_a_reader_applying_events_gives_what_a_full_read_of_the_records_does():
    """``Reader.apply`` against ``inputs`` of the records the events leave, and the
    keys it says changed."""
    red = kv(Networks.key("red"), Networks.encode(RED))
    web = kv(WEB.key, Attachments.encode(WEB))
    reader = Reader()
    first = reader.inputs([red, web])
    moved = Attachment("red", "h1", "c1", "eth0", WEB.allocations[:1], ("web",))
    other = Attachment("red", "h2", "c2", "eth0", WEB.allocations[1:], ("db",))
    events = [
        Event("put", kv(WEB.key, Attachments.encode(moved), 4)),
        Event("put", kv(other.key, Attachments.encode(other), 5)),
        Event("put", kv(Policies.key("p"), Policies.encode(POLICY), 6)),
    ]
    second = reader.apply(events)
    assert second == inputs([red, events[0].kv, events[1].kv, events[2].kv])
    assert second.since == first.serial and second.changed == {WEB.key, other.key}
    assert second.networks["red"] is first.networks["red"]  # untouched: the same object
    gone = [Event("delete", kv(Networks.key("red"), b"", 7)), Event("delete", kv(WEB.key, b"", 7))]
    third = reader.apply(gone)
    assert third == inputs([events[1].kv, events[2].kv])
    assert third.since == second.serial and third.changed == {WEB.key}
    bad = reader.apply([Event("put", kv(other.key, b"{not json", 8))])
    assert list(bad.bad) == [other.key] and not bad.endpoints and bad.changed == {other.key}
