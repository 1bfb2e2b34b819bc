from dataclasses import replace
from ipaddress import ip_network

import pytest
from meddling import BehindTheBack

from netplug.ipam.networks import (
    NetworkConflict,
    NetworkRecord,
    conflicts,
    disagreement,
    ensure_network,
    networks,
)
from netplug.ipam.store.sqlite import SQLiteStore

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
