"""The registry builder: store records -> immutable snapshot, and events applied to it."""

from __future__ import annotations

import random
from ipaddress import ip_address, ip_network

from dns_testing import attachment, block, registration

from netplug.dns.registry import Snapshot, SrvRecord, listing
from netplug.ipam.store.base import Event, KeyValue


def _ips(*items: str) -> tuple:
    return tuple(ip_address(i) for i in items)


BASE = [
    attachment("Blue", "h1", "c1", ["web", "Web2"], ["10.244.1.5", "fd00::5"]),
    attachment("blue", "h2", "c2", ["web"], ["10.244.2.5"]),
    block("blue", "10.244.1.0/24"),
    registration(
        "api", {"addresses": ["10.1.2.3"], "ttl": 9, "srv": [{"service": "_http._tcp", "port": 80}]}
    ),
    KeyValue("/netplug/ips/blue/10.244.1.0/24/10.244.1.5", b"{}", 1, 1, 1),  # not the registry's
]


def test_build_indexes() -> None:
    snap = Snapshot.build(BASE, 5)
    assert snap.revision == 5
    assert snap.nodes["web.blue"].addresses == _ips("10.244.1.5", "fd00::5", "10.244.2.5")
    assert snap.nodes["web2.blue"].addresses == _ips("10.244.1.5", "fd00::5")
    assert snap.nodes["api"].addresses == _ips("10.1.2.3") and snap.nodes["api"].ttl == 9
    assert snap.nodes["_http._tcp.api"].srv == (SrvRecord(0, 0, 80, "api"),)
    assert snap.ptr[ip_address("10.244.1.5")] == ("web.blue", "web2.blue")
    assert snap.ptr[ip_address("10.1.2.3")] == ("api",)
    assert snap.blocks == (ip_network("10.244.1.0/24"),)
    assert {"blue", "_tcp.api", "api", "web.blue"} <= snap.names.keys()
    assert snap.names["blue"] == 2  # web.blue and web2.blue
    assert snap.size == 3
    assert len(snap.sources) == 4


def test_unreadable_records_are_skipped() -> None:
    snap = Snapshot.build(
        [
            *BASE,
            KeyValue("/netplug/attachments/blue/h1/c9/eth0", b"not json", 1, 1, 1),
            KeyValue("/netplug/attachments/blue/h1/c8/eth0", b"[]", 1, 1, 1),
            attachment("blue", "h1", "c7", ["bad_name", "-x", "ok"], ["10.244.1.7"]),
            registration("broken", {"addresses": "nope"}),
            KeyValue("/netplug/blocks/blue/not-a-cidr", b"{}", 1, 1, 1),
        ],
        6,
    )
    assert "ok.blue" in snap.nodes and "bad_name.blue" not in snap.nodes
    assert "broken" not in snap.nodes
    assert len(snap.blocks) == 1


def _put(kv: KeyValue, rev: int) -> Event:
    return Event("put", KeyValue(kv.key, kv.value, rev, rev, 1))


def _delete(key: str, rev: int) -> Event:
    return Event("delete", KeyValue(key, b"", 0, rev, 0))


def test_apply_put_and_delete_leave_the_old_snapshot_alone() -> None:
    old = Snapshot.build(BASE, 5)
    new = old.apply([_put(attachment("red", "h1", "c3", ["db"], ["10.245.0.3"]), 6)])
    assert new.revision == 6 and new.nodes["db.red"].addresses == _ips("10.245.0.3")
    assert "db.red" not in old.nodes
    gone = new.apply(
        [_delete("/netplug/attachments/blue/h2/c2/eth0", 7), _delete("/netplug/dns/api", 7)]
    )
    assert gone.nodes["web.blue"].addresses == _ips("10.244.1.5", "fd00::5")
    assert "api" not in gone.nodes and "_http._tcp.api" not in gone.nodes
    assert ip_address("10.244.2.5") not in gone.ptr
    assert new.nodes["web.blue"].addresses == _ips("10.244.1.5", "fd00::5", "10.244.2.5")


def test_apply_irrelevant_events_is_identity() -> None:
    snap = Snapshot.build(BASE, 5)
    kv = KeyValue("/netplug/ips/blue/10.244.1.0/24/10.244.1.9", b"{}", 8, 8, 1)
    assert snap.apply([Event("put", kv)]) is snap
    assert snap.apply([]) is snap


def test_apply_replaces_a_record() -> None:
    snap = Snapshot.build(BASE, 5)
    again = snap.apply([_put(registration("api", {"addresses": ["10.1.2.4"]}), 9)])
    assert again.nodes["api"].addresses == _ips("10.1.2.4") and again.nodes["api"].ttl is None
    broken = snap.apply([Event("put", KeyValue("/netplug/dns/api", b"{", 9, 9, 2))])
    assert "api" not in broken.nodes  # an unreadable update removes the old record


# The random registry: names shared across networks and with API names, addresses
# shared between owners, blocks repeated across networks, records that do not parse.
NETWORKS = ("blue", "Red")
NAMES = ("web", "Web", "db", "bad_name")
ADDRESSES = ("10.244.1.5", "10.244.1.6", "fd00::5")
API_NAMES = ("api", "db.prod", "web.blue", "prod")
CIDRS = ("10.244.1.0/24", "10.244.2.0/24", "not-a-cidr")


def _random_record(rng: random.Random) -> KeyValue:
    kind = rng.choice(("container", "api", "block", "unreadable"))
    if kind == "block":
        return block(rng.choice(NETWORKS), rng.choice(CIDRS))
    if kind == "api":
        srv = [{"service": rng.choice(("_http._tcp", "_dns._udp")), "port": rng.choice((53, 80))}]
        body = {
            "addresses": rng.sample(ADDRESSES, rng.randint(0, 2)),
            "srv": srv * rng.randint(0, 1),
        }
        if rng.random() < 0.6:
            body["ttl"] = rng.randint(1, 60)
        return registration(rng.choice(API_NAMES), body)
    kv = attachment(
        rng.choice(NETWORKS),
        rng.choice(("h1", "h2")),
        rng.choice(("c1", "c2", "c3")),
        rng.sample(NAMES, rng.randint(1, 3)),
        rng.sample(ADDRESSES, rng.randint(0, 2)),  # none: a node with no addresses
    )
    return kv if kind == "container" else KeyValue(kv.key, b"{", 1, 1, 1)


def _tables(snap: Snapshot) -> dict:
    return {
        "revision": snap.revision,
        "sources": dict(snap.sources),
        "nodes": dict(snap.nodes),
        "names": dict(snap.names),
        "ptr": dict(snap.ptr),
        "blocks": snap.blocks,
    }


def test_apply_matches_a_full_build_of_the_same_records() -> None:
    rng = random.Random(1729)
    store: dict[str, KeyValue] = {}
    snap = Snapshot.build([], 0)
    seen = []  # (snapshot, its tables when it was made)
    for rev in range(1, 400):
        batch = []
        for _ in range(rng.randint(1, 3)):
            if store and rng.random() < 0.3:
                key = rng.choice([*store, "/netplug/dns/never"])
                store.pop(key, None)
                batch.append(_delete(key, rev))
            else:
                kv = _random_record(rng)
                store[kv.key] = kv
                batch.append(_put(kv, rev))
        snap = snap.apply(batch)
        want = _tables(Snapshot.build(store.values(), rev))
        assert _tables(snap) == want, f"batch {rev}: {batch}"
        seen.append((snap, want))
    assert all(_tables(old) == tables for old, tables in seen)  # apply left them all alone
    # The run met the cases that matter: shared addresses, nodes with no address, two blocks.
    nodes = [node for old, _ in seen for node in old.nodes.values()]
    assert any(len(owners) > 2 for old, _ in seen for owners in old.ptr.values())
    assert any(not n.addresses and n.srv for n in nodes) and any(not n.srv for n in nodes)
    assert any(not n.addresses and not n.srv for n in nodes) and any(n.ttl for n in nodes)
    assert max(len(old.blocks) for old, _ in seen) == 2


def test_listing() -> None:
    rows = listing(Snapshot.build(BASE, 5), "netplug.internal")
    assert [(r["name"], r["source"]) for r in rows] == [
        ("api.netplug.internal", "api"),
        ("web.blue.netplug.internal", "container"),
        ("web.blue.netplug.internal", "container"),
        ("web2.blue.netplug.internal", "container"),
    ]
    assert rows[0] == {
        "name": "api.netplug.internal",
        "source": "api",
        "addresses": ["10.1.2.3"],
        "ttl": 9,
        "srv": [{"service": "_http._tcp", "port": 80, "priority": 0, "weight": 0}],
    }
    assert rows[1]["network"] == "Blue" and rows[1]["containerID"] == "c1"
