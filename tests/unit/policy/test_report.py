"""Hosts' policy reports: counters read from nft's JSON, summed, and revisions compared."""

from __future__ import annotations

import pytest

from netplug.policy.plan import ISOLATION_DROPPED, counter_names
from netplug.policy.report import Counts, HostCounters, behind, from_listing, total


def counter(name: str, packets: int, table: str = "netplug") -> dict:
    """One counter as ``nft -j list counters table inet netplug`` prints it (1.0.6)."""
    return {
        "counter": {
            "family": "inet",
            "name": name,
            "table": table,
            "handle": 3,
            "packets": packets,
            "bytes": packets * 60,
        }
    }


META = {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5"}}


def test_counters_are_read_by_policy_from_nft_json():
    allowed, dropped = counter_names("db-from-web")
    listing = {
        "nftables": [
            META,
            counter(allowed, 12),
            counter(dropped, 3),
            counter(counter_names("p.v2")[0], 5),  # its dropped counter not listed (yet)
            counter(ISOLATION_DROPPED, 7),
            counter("someone-elses", 99),
            counter("pol//allowed", 1),  # no policy name
            counter("pol/x/bytes", 1),  # not a verdict
        ]
    }
    assert from_listing(listing) == HostCounters(
        {"db-from-web": Counts(12, 3), "p.v2": Counts(5, 0)}, isolation_dropped=7
    )


@pytest.mark.parametrize("listing", [{}, {"nftables": []}, {"nftables": [META]}])
def test_a_table_without_counters_reads_as_zero(listing):
    assert from_listing(listing) == HostCounters({}, 0)


def test_hosts_are_summed_policy_by_policy():
    one = HostCounters({"a": Counts(1, 2), "b": Counts(10, 0)}, 4)
    two = HostCounters({"a": Counts(100, 200)}, 1)
    assert total([one, two]) == HostCounters({"a": Counts(101, 202), "b": Counts(10, 0)}, 5)
    assert total([]) == HostCounters({}, 0)


def test_hosts_behind_are_the_live_ones_without_the_current_revision():
    enforced = {"h1": 42, "h2": 40, "h3": None, "gone": 40}
    assert behind(enforced, ["h1", "h2", "h3", "h4"], 42) == ["h2", "h3", "h4"]
    assert behind(enforced, ["h1"], 42) == []
    assert behind({}, [], 0) == []
