"""The agent's policy report in the store (SQLite and etcd), with the kernel's
counters replaced by what ``nft -j list counters`` would print: written under
the lease it is given, only when it changed (counters alone at most every
COUNTERS_PERIOD), again under a new lease."""

from __future__ import annotations

import logging

import pytest

from netplug.agent.daemon import parse_args
from netplug.agent.enforcement import Enforcement
from netplug.agent.policy_report import COUNTERS_PERIOD, PolicyReport
from netplug.ipam.schema import Enforcement as Reports
from netplug.ipam.schema import EnforcementRecord
from netplug.net import NetError, policy_table
from netplug.policy.report import Counts, HostCounters


class Counters:
    def __init__(self) -> None:
        self.packets = {"pol/db/allowed": 3, "pol/db/dropped": 1}
        self.error: NetError | None = None

    def __call__(self, table: str) -> dict:
        if self.error is not None:
            raise self.error
        counters = [{"counter": {"name": n, "packets": p}} for n, p in self.packets.items()]
        return {"nftables": counters}


@pytest.fixture
def kernel(monkeypatch) -> Counters:
    counters = Counters()
    monkeypatch.setattr(policy_table, "counters", counters)
    return counters


def test_the_report_is_written_under_the_lease_and_only_when_it_changed(store, kernel):
    state = Enforcement(revision=5)
    report = PolicyReport(store, "h1", lambda: state)
    lease = store.grant(30)
    report.once(lease, 0.0)
    kv = store.get(Reports.key("h1"))
    assert kv is not None and kv.lease == lease
    assert Reports.decode(kv.value) == EnforcementRecord(5, HostCounters({"db": Counts(3, 1)}))
    assert report.counters.policies == {"db": Counts(3, 1)}  # what /metrics shows

    report.once(lease, 0.0)  # nothing changed: nothing written
    assert store.get(Reports.key("h1")).mod_revision == kv.mod_revision

    kernel.packets["pol/db/dropped"] = 4  # with the error: written at once
    state = state.failed(1.0, "nft refused")
    report.once(lease, 0.0)
    found = Reports.decode(store.get(Reports.key("h1")).value)
    assert found == EnforcementRecord(5, HostCounters({"db": Counts(3, 4)}), "nft refused")

    store.revoke(lease)  # as its expiry, or a takeover, does: the report goes with it
    assert store.get(Reports.key("h1")) is None
    renewed = store.grant(30)
    report.once(renewed, 0.0)  # the same report, under the new lease: written again
    assert store.get(Reports.key("h1")).lease == renewed


def test_failures_are_logged_once_and_the_report_goes_on(store, kernel, caplog):
    report = PolicyReport(store, "h1", Enforcement)
    lease = store.grant(30)
    kernel.error = NetError("nft could not list counters")
    with caplog.at_level(logging.WARNING, "netplug.agent.policy_report"):
        report.once(lease, 0.0)
        report.once(lease, 0.0)
    assert [r.getMessage() for r in caplog.records] == [
        "policy report: nft could not list counters; trying again every 2 s"
    ]
    assert store.get(Reports.key("h1")) is None
    kernel.error = None
    report.once(lease, 0.0)
    assert Reports.decode(store.get(Reports.key("h1")).value).revision is None


def test_counters_alone_are_written_at_most_every_period_a_revision_or_error_at_once(store, kernel):
    """Counters move with every packet: writing each reading made every agent
    write (and every watcher wake) every 2 s while traffic flowed."""
    state = Enforcement(revision=5)
    report = PolicyReport(store, "h1", lambda: state)
    lease = store.grant(30)

    def written() -> tuple[int, EnforcementRecord]:
        kv = store.get(Reports.key("h1"))
        return kv.mod_revision, Reports.decode(kv.value)

    report.once(lease, 100.0)
    first, _ = written()
    for now in (102.0, 104.0, 100.0 + COUNTERS_PERIOD - 0.1):
        kernel.packets["pol/db/allowed"] += 1
        report.once(lease, now)
        assert written()[0] == first, f"counters written again after {now - 100:.1f} s"
    assert report.counters.policies["db"] == Counts(6, 1)  # /metrics: every reading

    report.once(lease, 100.0 + COUNTERS_PERIOD)
    second, record = written()
    assert second > first and record.counters.policies["db"] == Counts(6, 1)

    kernel.packets["pol/db/allowed"] += 1
    state = Enforcement(revision=6)  # a new revision: at once, with the counters
    report.once(lease, 131.0)
    third, record = written()
    assert third > second and record == EnforcementRecord(6, HostCounters({"db": Counts(7, 1)}))

    state = state.failed(132.0, "nft refused")  # an error: at once
    report.once(lease, 132.0)
    assert written()[1].error == "nft refused"


def test_a_short_counters_period_writes_counters_at_each_reading(store, kernel):
    report = PolicyReport(store, "h1", Enforcement, counters_period=0)
    lease = store.grant(30)
    report.once(lease, 0.0)
    kernel.packets["pol/db/allowed"] = 9
    report.once(lease, 0.0)
    counters = Reports.decode(store.get(Reports.key("h1")).value).counters
    assert counters.policies["db"] == Counts(9, 1)


def test_netplugd_takes_the_counters_period_in_seconds():
    assert parse_args([]).counters_period == COUNTERS_PERIOD == 30
    assert parse_args(["--counters-period", "0"]).counters_period == 0
    for bad in ("-1", "nan", "soon"):
        with pytest.raises(SystemExit):
            parse_args(["--counters-period", bad])
