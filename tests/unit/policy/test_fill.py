"""A plan filled container by container (``Fill``) against ``Plan.dataplane`` of
the same containers at once."""

from __future__ import annotations

import random
from ipaddress import ip_address, ip_network

from netplug.policy.fill import Fill
from netplug.policy.model import parse
from netplug.policy.plan import Endpoint, NetworkInfo, compile_plan

BLUE = NetworkInfo("blue", (ip_network("10.1.0.0/16"), ip_network("fd01::/48")))
POLICY = parse(
    '{"name": "p", "network": "blue", "select": {"names": ["db*"]},'
    ' "ingress": [{"from": [{"names": ["web"]}]}]}',
    None,
)
PLAN = compile_plan(POLICY, [BLUE])


def container(rng: random.Random) -> Endpoint:
    """One of a few addresses (so that two containers share one at times)."""
    addresses = [ip_address(f"10.1.{rng.randrange(2)}.{rng.randrange(2, 6)}")]
    if rng.random() < 0.3:
        addresses.append(ip_address(f"fd01::{rng.randrange(2, 6)}"))
    names = frozenset([rng.choice(["db-1", "web", "x"])])
    return Endpoint("blue", rng.choice(["h1", "h2"]), tuple(addresses), names)


def test_a_fill_updated_key_by_key_holds_what_a_fill_of_all_at_once_does():
    rng = random.Random(3)
    fill, endpoints = Fill(PLAN, "h1"), {}
    for _ in range(500):
        key = f"c{rng.randrange(10)}"
        if rng.random() < 0.3:
            endpoints.pop(key, None)
        else:
            endpoints[key] = container(rng)
        before, after = fill.update(endpoints, [key])
        assert fill.dataplane() == PLAN.dataplane(endpoints.values(), "h1")
        assert set(before) | set(after) <= {key}
    assert fill.dataplane().members["pol/p/sel4"]  # it did fill something


def test_an_equal_container_keeps_its_share_and_a_new_one_reports_the_change():
    fill = Fill(PLAN, "h1")
    db = Endpoint("blue", "h1", (ip_address("10.1.0.2"),), frozenset(["db-1"]))
    assert fill.update({"a": db}, ["a"]) == ({}, {"a": (db, PLAN.elements(db, "h1"))})
    kept = fill.shares["a"]
    same = Endpoint("blue", "h1", (ip_address("10.1.0.2"),), frozenset(["db-1"]))
    assert fill.update({"a": same}, ["a"]) == ({}, {}) and fill.shares["a"] is kept
    assert fill.update({}, ["a"]) == ({"a": kept}, {})
    assert fill.dataplane() == PLAN.base
