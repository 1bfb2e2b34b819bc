"""The enforcer's reported state: failing with backoff, recovered, and the policy
revision and change times it follows from its feed (no clock, no kernel)."""

from __future__ import annotations

from netplug.agent.enforcement import RETRY_INITIAL, RETRY_MAX, Enforcement, Progress
from netplug.agent.store_view import Delta, Full
from netplug.ipam.schema import Attachments, Policies, PolicyDeleted
from netplug.ipam.store.base import Event, KeyValue


def kv(key: str, revision: int) -> KeyValue:
    return KeyValue(key, b"{}", revision, revision, 1)


def test_failures_back_off_to_a_bound_and_report_the_error():
    state = Enforcement(revision=7)
    assert not state.failing and state.report(0.0) == {"state": "ok", "revision": 7}
    delays = []
    for now in range(8):
        state = state.failed(100.0 + now, f"nft refused #{now}")
        delays.append(state.retry_delay())
    assert delays[:3] == [RETRY_INITIAL, RETRY_INITIAL * 2, RETRY_INITIAL * 4]
    assert delays[-1] == RETRY_MAX and delays == sorted(delays)
    assert state.report(110.0) == {
        "state": "failing",
        "revision": 7,  # still the one in force
        "error": "nft refused #7",
        "failures": 8,
        "failingFor": 10.0,  # since the first failure
    }
    recovered = state.enforced(9)
    assert recovered == Enforcement(9) and recovered.retry_delay() == RETRY_INITIAL


def test_progress_follows_the_policy_revision_and_times_changes_only():
    """Times from when the store view received a change (``Delta.received``)."""
    progress = Progress()
    full = Full(5, (kv(Policies.key("a"), 3), kv(Attachments.key("n", "h", "c", "e"), 5)))
    progress.take([full])
    assert progress.revision == 3 and progress.enforced(2.0) is None  # a start is no change
    progress.take([Delta((Event("put", kv(Attachments.key("n", "h", "d", "e"), 6)),), 3.0)])
    assert progress.revision == 3 and progress.enforced(4.0) is None
    progress.take([Delta((Event("put", kv(Policies.key("b"), 8)),), 10.0)])
    progress.take([Delta((Event("put", kv(Policies.key("b"), 9)),), 10.5)])
    assert progress.revision == 9
    assert progress.enforced(10.25) == 0.25  # from the first change not yet in force
    assert progress.enforced(11.0) is None
    deleted = (
        Event("delete", kv(Policies.key("b"), 12)),
        Event("put", kv(PolicyDeleted.key(), 12)),
    )
    progress.take([Delta(deleted, 20.0)])
    assert progress.revision == 12 and progress.enforced(20.5) == 0.5
