"""The agent's policy report in the store (SQLite and etcd), with the kernel's
counters replaced by what ``nft -j list counters`` would print: written under
the lease it is given, only when it changed, again under a new lease."""

from __future__ import annotations

import logging

import pytest

from netplug.agent.enforcement import Enforcement
from netplug.agent.policy_report import PolicyReport
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
    report.once(lease)
    kv = store.get(Reports.key("h1"))
    assert kv is not None and kv.lease == lease
    assert Reports.decode(kv.value) == EnforcementRecord(5, HostCounters({"db": Counts(3, 1)}))
    assert report.counters.policies == {"db": Counts(3, 1)}  # what /metrics shows

    report.once(lease)  # nothing changed: nothing written
    assert store.get(Reports.key("h1")).mod_revision == kv.mod_revision

    kernel.packets["pol/db/dropped"] = 4
    state = state.failed(1.0, "nft refused")
    report.once(lease)
    found = Reports.decode(store.get(Reports.key("h1")).value)
    assert found == EnforcementRecord(5, HostCounters({"db": Counts(3, 4)}), "nft refused")

    store.revoke(lease)  # as its expiry, or a takeover, does: the report goes with it
    assert store.get(Reports.key("h1")) is None
    renewed = store.grant(30)
    report.once(renewed)  # the same report, under the new lease: written again
    assert store.get(Reports.key("h1")).lease == renewed


def test_failures_are_logged_once_and_the_report_goes_on(store, kernel, caplog):
    report = PolicyReport(store, "h1", Enforcement)
    lease = store.grant(30)
    kernel.error = NetError("nft could not list counters")
    with caplog.at_level(logging.WARNING, "netplug.agent.policy_report"):
        report.once(lease)
        report.once(lease)
    assert [r.getMessage() for r in caplog.records] == [
        "policy report: nft could not list counters; trying again every 2 s"
    ]
    assert store.get(Reports.key("h1")) is None
    kernel.error = None
    report.once(lease)
    assert Reports.decode(store.get(Reports.key("h1")).value).revision is None
