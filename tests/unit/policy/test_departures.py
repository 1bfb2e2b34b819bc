"""Which addresses' conntrack entries go when containers come and go (``departures``)."""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import ip_address, ip_network

from netplug.policy.departures import departed, departed_between, departed_shares, held
from netplug.policy.model import parse
from netplug.policy.plan import Endpoint, NetworkInfo, compile_plan

BLUE = NetworkInfo("blue", (ip_network("10.1.0.0/16"), ip_network("fd01::/48")))
# db accepts only web; app-* may open nothing but db.
POLICIES = parse(
    json.dumps(
        [
            {"name": "db", "network": "blue", "select": {"names": ["db"]},
             "ingress": [{"from": [{"names": ["web"]}, {"cidr": "192.0.2.0/24"}]}]},
            {"name": "app", "network": "blue", "select": {"names": ["app-*"]},
             "egress": [{"to": [{"names": ["db"]}]}]},
        ]
    ),
    {"blue"},
)  # fmt: skip
PLAN = compile_plan(POLICIES, [BLUE])


def ep(host: str, *addresses: str, names=()) -> Endpoint:
    return Endpoint("blue", host, tuple(map(ip_address, addresses)), frozenset(names))


def shares(endpoints: dict[str, Endpoint], me: str = "h1") -> dict:
    return {key: (e, PLAN.elements(e, me)) for key, e in endpoints.items()}


def test_held_names_each_container_address_with_its_sets_and_map_verdicts():
    members = {
        "pol/db/sel4": {"10.1.0.2"},
        "in4": {"10.1.0.2 : jump in/blue"},
        "isolated4": {"10.1.0.0/16"},  # a subnet: no container's
        "pol/db/in0/names6": {"fd01::3"},
    }
    assert held(members) == {
        "10.1.0.2": frozenset({"pol/db/sel4", "in4 : jump in/blue"}),
        "fd01::3": frozenset({"pol/db/in0/names6"}),
    }


def test_an_address_departs_when_it_leaves_a_set_or_its_verdict_changes():
    before = {
        "a": frozenset({"s1", "m : jump in/x"}),
        "b": frozenset({"s1"}),
        "c": frozenset({"s2"}),
    }
    after = {"a": frozenset({"s1", "m : jump in/y"}), "b": frozenset({"s1"})}
    assert departed(before, after) == {"a", "c"}
    assert departed({}, after) == set()  # joining a set: no connection holds a verdict yet


def test_a_remote_container_that_goes_or_changes_owner_departs_where_it_was_in_a_set():
    web = ep("h2", "10.1.1.2", "fd01::12", names=["web"])
    other = ep("h2", "10.1.1.3", names=["other"])  # in no set
    db = ep("h1", "10.1.0.2", names=["db"])
    was = shares({"k/web": web, "k/other": other, "k/db": db})
    # web's address goes to a new container named "other": no longer in db's peer set.
    now = shares({"k/new": ep("h2", "10.1.1.2", names=["other"]), "k/db": db})
    assert departed_shares(was, now, "h1") == {"10.1.1.2", "fd01::12"}


def test_the_same_container_with_the_same_share_does_not_depart():
    web = ep("h2", "10.1.1.2", names=["web"])
    was = shares({"k/web": web})
    assert departed_shares(was, was, "h1") == set()
    assert departed_shares(was, shares({"k/web": replace(web)}), "h1") == set()


def test_a_renamed_container_departs_only_from_the_sets_it_left():
    app = ep("h2", "10.1.1.5", names=["app-1"])
    now = shares({"k/app": replace(app, names=frozenset({"app-1", "extra"}))})
    assert departed_shares(shares({"k/app": app}), now, "h1") == set()  # same sets
    now = shares({"k/app": replace(app, names=frozenset({"web"}))})
    assert departed_shares(shares({"k/app": app}), now, "h1") == {"10.1.1.5"}


def test_a_local_container_that_went_is_left_to_its_del():
    db = ep("h1", "10.1.0.2", names=["db"])
    assert departed_shares(shares({"k/db": db}), {}, "h1") == set()
    assert departed_shares(shares({"k/db": db}, me="h2"), {}, "h2") == {"10.1.0.2"}


def test_whole_tables_compare_only_under_one_generation():
    web = ep("h2", "10.1.1.2", names=["web"])
    before = PLAN.dataplane([web], "h1")
    after = PLAN.dataplane([], "h1")
    assert departed_between(before, after) == {"10.1.1.2"}
    assert departed_between(before, replace(after, generation=after.generation + 256)) == set()
    assert departed_between(None, after) == set()
    assert departed_between(before, None) == set()
