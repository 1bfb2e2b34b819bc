import multiprocessing
from dataclasses import replace
from ipaddress import ip_network

import pytest
from meddling import BehindTheBack

from netplug.ipam.networks import (
    FIRST_ASSIGNED_VNI,
    NetworkConflict,
    NetworkRecord,
    conflicts,
    disagreement,
    ensure_network,
    free_vni,
    networks,
)
from netplug.ipam.schema import Networks
from netplug.ipam.store.sqlite import SQLiteStore
from netplug.ipam.store.url import open_store

BLUE = NetworkRecord("10.244.0.0/16", "fd00:244::/48", 4242, "netplug.internal")


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (NetworkRecord("10.244.7.0/24", "", 4243, "x"), "overlaps 10.244.0.0/16 of network blue"),
        (NetworkRecord("10.0.0.0/8", "", 4243, "x"), "overlaps"),
        (NetworkRecord("10.245.0.0/16", "fd00:244:0:1::/64", 4243, "x"), "overlaps fd00:244::/48"),
        (NetworkRecord("10.245.0.0/16", "", 4242, "x"), "vxlan.vni 4242 is network blue's"),
    ],
)
def test_conflicts_name_the_other_network_and_the_fix(record, problem):
    (found,) = conflicts("red", record, {"blue": BLUE})
    assert problem in found


def test_no_conflict_with_itself_distinct_subnets_or_no_vni():
    assert conflicts("blue", BLUE, {"blue": BLUE}) == []
    assert conflicts("red", NetworkRecord("10.245.0.0/16", "", 4243, "x"), {"blue": BLUE}) == []
    ipam_only = NetworkRecord("10.246.0.0/16", "", 0, "x")
    assert conflicts("br", ipam_only, {"other": NetworkRecord("10.9.0.0/16", "", 0, "x")}) == []


def test_ensure_network_records_once_and_refuses_conflicts(tmp_path):
    store = SQLiteStore(str(tmp_path / "db"))
    try:
        ensure_network(store, "blue", BLUE)
        revision = store.status()
        ensure_network(store, "blue", BLUE)
        assert store.status() == revision  # unchanged: no write
        with pytest.raises(NetworkConflict, match="overlaps"):
            ensure_network(store, "red", NetworkRecord("10.244.0.0/20", "", 7, "x"))
        assert store.get("/netplug/networks/red") is None
        assert BLUE.subnets() == [ip_network("10.244.0.0/16"), ip_network("fd00:244::/48")]
    finally:
        store.close()


def test_overlapping_networks_recorded_at_once_are_not_both_taken(tmp_path):
    store = SQLiteStore(str(tmp_path / "db"))
    try:
        red = NetworkRecord("10.244.0.0/20", "", 7, "x")
        # Another host's first ADD records red after this one listed the records.
        racing = BehindTheBack(
            store, "/netplug/networks/", lambda: ensure_network(store, "red", red)
        )
        with pytest.raises(NetworkConflict, match="of network red"):
            ensure_network(racing, "blue", BLUE)
        assert set(networks(store)) == {"red"}
    finally:
        store.close()


def test_a_host_with_another_block_size_or_subnet_is_refused(tmp_path):
    store = SQLiteStore(str(tmp_path / "db"))
    blue = NetworkRecord("10.244.0.0/16", "", 4242, "netplug.internal", 24)
    try:
        ensure_network(store, "blue", blue)
        with pytest.raises(NetworkConflict, match=r"hostBlockPrefix 24 \(this config: 26\)"):
            ensure_network(store, "blue", replace(blue, block_prefix=26))
        with pytest.raises(NetworkConflict, match=r"subnet 10\.244\.0\.0/16 \(this config"):
            ensure_network(store, "blue", replace(blue, subnet="10.245.0.0/16"))
        ensure_network(store, "blue", replace(blue, domain="example.org"))  # DNS may change
        assert networks(store)["blue"].domain == "example.org"
    finally:
        store.close()


def test_a_record_from_before_block_sizes_were_kept_is_completed():
    old = NetworkRecord("10.244.0.0/16", "", 4242, "netplug.internal")
    assert disagreement("blue", old, replace(old, block_prefix=26)) == ""


# -- VNIs assigned by the store (the config leaves vxlan.vni out) -------------------------


def auto(subnet: str) -> NetworkRecord:
    """A netplug network's record as a config without vxlan.vni asks for it."""
    return NetworkRecord(subnet, "", None, "netplug.internal", 24)


def test_networks_without_a_vni_get_the_lowest_free_ones(store):
    assert ensure_network(store, "blue", auto("10.244.0.0/16")).vni == FIRST_ASSIGNED_VNI
    ensure_network(store, "green", replace(auto("10.246.0.0/16"), vni=FIRST_ASSIGNED_VNI + 1))
    assert ensure_network(store, "red", auto("10.245.0.0/16")).vni == FIRST_ASSIGNED_VNI + 2
    recorded = networks(store)
    assert {name: r.vni for name, r in recorded.items()} == {
        "blue": FIRST_ASSIGNED_VNI,
        "green": FIRST_ASSIGNED_VNI + 1,
        "red": FIRST_ASSIGNED_VNI + 2,
    }


def test_every_later_add_reads_the_assigned_vni_back_without_writing(store):
    first = ensure_network(store, "blue", auto("10.244.0.0/16"))
    revision = store.status()
    assert ensure_network(store, "blue", auto("10.244.0.0/16")) == first  # another host
    assert ensure_network(store, "blue", first) == first  # a config naming that VNI
    assert store.status() == revision
    with pytest.raises(NetworkConflict, match=rf"vxlan.vni {first.vni} \(this config: 5000\)"):
        ensure_network(store, "blue", replace(first, vni=5000))


def test_an_explicit_vni_another_network_holds_is_refused_with_code_7(store):
    blue = ensure_network(store, "blue", auto("10.244.0.0/16"))
    with pytest.raises(NetworkConflict, match=f"vxlan.vni {blue.vni} is network blue's") as e:
        ensure_network(store, "red", replace(auto("10.245.0.0/16"), vni=blue.vni))
    assert e.value.code == 7
    assert set(networks(store)) == {"blue"}


def test_a_netplug_ipam_network_gets_no_vni_and_keeps_none():
    ipam_only = NetworkRecord("10.246.0.0/16", "", 0, "x")
    assert "vxlan.vni none (this config: unset)" in disagreement(
        "br", ipam_only, replace(ipam_only, vni=None)
    )
    assert free_vni({"br": ipam_only, "blue": BLUE}) == FIRST_ASSIGNED_VNI + 1


def on_another_host(url: str, *names_and_subnets: tuple[str, str]) -> list[NetworkRecord]:
    """First ADDs of these networks by another process, through a store of its own."""
    other = open_store(url)
    try:
        return [ensure_network(other, name, auto(subnet)) for name, subnet in names_and_subnets]
    finally:
        other.close()


def test_two_networks_first_used_at_once_get_distinct_vnis(store):
    # Another host records red (taking the free VNI) between this one's read of
    # the records and its write.
    racing = BehindTheBack(
        store, "/netplug/networks/", lambda: on_another_host(store.url, ("red", "10.245.0.0/16"))
    )
    blue = ensure_network(racing, "blue", auto("10.244.0.0/16"))
    assert blue.vni == FIRST_ASSIGNED_VNI + 1
    assert {n: r.vni for n, r in networks(store).items()} == {
        "red": FIRST_ASSIGNED_VNI,
        "blue": FIRST_ASSIGNED_VNI + 1,
    }


def test_two_first_adds_of_one_network_agree_on_its_vni(store):
    # Between this ADD's read and its write, another host records red (taking the
    # VNI this one is about to pick) and then blue itself, on the next free VNI.
    won = []
    racing = BehindTheBack(
        store,
        "/netplug/networks/",
        lambda: won.extend(
            on_another_host(store.url, ("red", "10.245.0.0/16"), ("blue", "10.244.0.0/16"))
        ),
    )
    blue = ensure_network(racing, "blue", auto("10.244.0.0/16"))
    assert blue == won[1] and blue.vni == FIRST_ASSIGNED_VNI + 1
    assert networks(store)["blue"] == blue


def first_use_in_child(url: str, name: str, subnet: str, barrier, results) -> None:
    store = open_store(url)
    try:
        barrier.wait(timeout=20)
        results.put((name, ensure_network(store, name, auto(subnet)).vni))
    finally:
        store.close()


def test_processes_first_using_networks_at_once_agree_and_never_share_a_vni(store):
    """Eight processes (two hosts for each of four networks) record them at once."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    nets = [(f"net{i}", f"10.{i}.0.0/16") for i in range(4)]
    procs = [
        ctx.Process(target=first_use_in_child, args=(store.url, name, subnet, barrier, results))
        for name, subnet in nets * 2
    ]
    for p in procs:
        p.start()
    try:
        seen = [results.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    by_network = {name: {vni for n, vni in seen if n == name} for name, _ in nets}
    assert all(len(vnis) == 1 for vnis in by_network.values()), by_network  # agreement
    assigned = {name: vnis.pop() for name, vnis in by_network.items()}
    assert sorted(assigned.values()) == list(range(FIRST_ASSIGNED_VNI, FIRST_ASSIGNED_VNI + 4))
    assert {n: r.vni for n, r in networks(store).items()} == assigned


def test_a_host_that_disagrees_on_isolate_is_refused_naming_both(store):
    ensure_network(store, "blue", BLUE)
    with pytest.raises(NetworkConflict, match=r"isolate true \(this config: false\)") as e:
        ensure_network(store, "blue", replace(BLUE, isolate=False))
    assert e.value.code == 7
    assert networks(store)["blue"].isolate is True


def test_records_from_before_isolate_was_kept_read_as_their_plugin_recorded_them():
    old = b'{"subnet":"10.9.0.0/16","subnet6":"","vni":%d,"domain":"d"}'
    assert Networks.decode(old % 4242).isolate is True  # netplug's own: the default
    assert Networks.decode(old % 0).isolate is False  # netplug-ipam's: never isolated


def test_a_host_on_another_vxlan_port_is_refused_naming_both(store):
    ensure_network(store, "blue", BLUE)
    with pytest.raises(NetworkConflict, match=r"vxlan.port 4789 \(this config: 8472\)"):
        ensure_network(store, "blue", replace(BLUE, port=8472))
    assert networks(store)["blue"].port == 4789


def test_the_port_is_written_only_when_not_the_default():
    """Readers from before it refuse an unknown field: a network on the default
    port keeps the record they read, one on another port they refuse (loudly)."""
    assert b"port" not in Networks.encode(BLUE)
    assert Networks.decode(Networks.encode(BLUE)).port == 4789
    other = replace(BLUE, port=8472)
    assert b'"port":8472' in Networks.encode(other).replace(b" ", b"")
    assert Networks.decode(Networks.encode(other)) == other
