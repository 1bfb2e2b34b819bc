"""The watch's next step, where it resumes, and which endpoint it tries first (pure)."""

from __future__ import annotations

import pytest

from netplug.ipam.store.etcd_gateway import endpoint_order
from netplug.ipam.store.etcd_watch import (
    DROPPED,
    PROBE,
    PROBE_AFTER,
    READ,
    RECONNECT,
    WAIT,
    resume_at,
    step,
)

NO_LEADER = {"error": {"grpc_code": 14, "http_code": 503, "message": "etcdserver: no leader"}}


@pytest.mark.parametrize(
    ("message", "silent_for", "expected"),
    [
        ({"result": {"events": []}}, 0.0, READ),
        ({"result": {"canceled": True, "compact_revision": "9"}}, 0.0, READ),  # raised later
        (NO_LEADER, 0.0, RECONNECT),  # the member lost its leader (hasleader)
        ({"error": {"grpc_code": 1, "message": "context canceled"}}, 0.0, RECONNECT),
        ({"error": {"grpc_code": 3, "message": "bad request"}}, 0.0, READ),  # raised later
        (DROPPED, 0.0, RECONNECT),
        (None, 0.1, WAIT),
        (None, PROBE_AFTER, PROBE),  # silent for long: is the member still there?
    ],
)
def test_step(message, silent_for, expected) -> None:
    assert step(message, silent_for) == expected


def test_resume_after_the_last_revision_delivered() -> None:
    assert resume_at(10, [11, 11, 14]) == 15
    assert resume_at(10, []) == 10  # nothing delivered: from where it was


def test_endpoint_order_starts_at_the_preferred_and_leaves_a_failed_one_last() -> None:
    assert endpoint_order(1, 3) == [1, 2, 0]
    assert endpoint_order(1, 3, avoid=1) == [2, 0, 1]
    assert endpoint_order(0, 3, avoid=2) == [0, 1, 2]
    assert endpoint_order(0, 1, avoid=0) == [0]
