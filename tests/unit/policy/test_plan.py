"""The enforcement plan: (policies, networks, containers) -> nftables text and set deltas."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from ipaddress import ip_address, ip_network

import pytest

from netplug.policy.model import parse
from netplug.policy.plan import (
    Dataplane,
    Endpoint,
    NetworkInfo,
    SetSpec,
    add_elements,
    compile_plan,
    counter_names,
    delete_elements,
    delta,
    desired,
    from_listing,
    render,
    settled,
)

BLUE = NetworkInfo("blue", (ip_network("10.1.0.0/16"), ip_network("fd01::/48")))
GREEN = NetworkInfo("green", (ip_network("10.2.0.0/16"),))
OPEN = NetworkInfo("open", (ip_network("10.3.0.0/16"),), isolate=False)
NETWORKS = [BLUE, GREEN, OPEN]


def ep(network: str, host: str, *addresses: str, names=()) -> Endpoint:
    return Endpoint(network, host, tuple(map(ip_address, addresses)), frozenset(names))


DB = ep("blue", "h1", "10.1.0.2", "fd01::2", names=["db"])
WEB = ep("blue", "h2", "10.1.1.2", names=["web"])
API = ep("green", "h1", "10.2.0.2", names=["api"])
ENDPOINTS = [DB, WEB, API]


def policies(*docs: dict):
    return parse(json.dumps(list(docs)), {"blue", "green", "open"})


def plan(*docs: dict, endpoints=ENDPOINTS, networks=NETWORKS, me="h1") -> Dataplane:
    return desired(policies(*docs) if docs else (), networks, endpoints, me)


def chain(dp: Dataplane, name: str) -> list[str] | None:
    """The rules of chain ``name`` (absent: None)."""
    rules = dp.chains.get(name)
    return None if rules is None else list(rules)


def test_isolated_networks_are_classified_by_subnet_and_open_ones_left_out():
    dp = plan()
    assert dp.sets["isolated4"] == SetSpec("set", "ipv4_addr", interval=True)
    assert dp.members["isolated4"] == {"10.1.0.0/16", "10.2.0.0/16"}
    assert dp.members["isolated6"] == {"fd01::/48"}
    assert chain(dp, "isolation") == [
        "ct status dnat return",  # published ports
        "ip saddr { 10.1.0.0/16 } ip daddr @isolated4 ip daddr != { 10.1.0.0/16 } jump cross",
        "ip saddr { 10.2.0.0/16 } ip daddr @isolated4 ip daddr != { 10.2.0.0/16 } jump cross",
        "ip6 saddr { fd01::/48 } ip6 daddr @isolated6 ip6 daddr != { fd01::/48 } jump cross",
    ]
    assert chain(dp, "cross") == ['counter name "isolation/dropped" drop']


def test_no_isolated_network_means_no_isolation_rules():
    dp = plan(networks=[OPEN])
    assert dp.members["isolated4"] == set()
    assert chain(dp, "isolation") == ["ct status dnat return"]


def test_forward_passes_replies_judged_connections_and_neighbour_discovery_first():
    rules = chain(plan(), "forward")
    assert rules[:5] == [
        "ct state related accept",
        "ct state established ct direction reply accept",
        # the fast path: a connection judged under the rules in force
        "ct state established ct mark and 0xffffff00 == $generation"
        ' counter name "established/fast" accept $stamp',
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, "
        "nd-router-advert } accept",
        "jump isolation",
    ]
    # reached only by what no chain dropped, and only netplug's own connections (the
    # host may forward others): the mark's low byte is left alone
    keep = "ct mark set ct mark and 0x000000ff or $generation"
    assert [r for r in rules if "ct mark set" in r] == [
        f"ip saddr {{ 10.1.0.0/16, 10.2.0.0/15 }} {keep}",  # blue, green and open
        f"ip daddr {{ 10.1.0.0/16, 10.2.0.0/15 }} {keep}",
        f"ip6 saddr {{ fd01::/48 }} {keep}",
        f"ip6 daddr {{ fd01::/48 }} {keep}",
    ]


def test_selected_sets_span_hosts_and_dispatch_holds_local_containers_only():
    doc = {"name": "p", "network": "blue", "select": {}, "ingress": []}
    on_h1, on_h2 = plan(doc, me="h1"), plan(doc, me="h2")
    for dp in (on_h1, on_h2):
        assert dp.members["pol/p/sel4"] == {"10.1.0.2", "10.1.1.2"}
        assert dp.members["pol/p/sel6"] == {"fd01::2"}
    assert on_h1.members["in4"] == {"10.1.0.2 : jump in/blue"}
    assert on_h1.members["in6"] == {"fd01::2 : jump in/blue"}
    assert on_h2.members["in4"] == {"10.1.1.2 : jump in/blue"}
    assert on_h1.members["out4"] == set()  # no egress key: outgoing untouched


def test_empty_ingress_denies_everything_new_and_counts_it():
    dp = plan({"name": "p", "network": "blue", "select": {"names": ["db"]}, "ingress": []})
    assert chain(dp, "in/blue") == [
        'ip daddr @pol/p/sel4 counter name "pol/p/dropped"',
        'ip6 daddr @pol/p/sel6 counter name "pol/p/dropped"',
        "drop",
    ]
    assert chain(dp, "out/blue") is None
    assert dp.members["pol/p/sel4"] == {"10.1.0.2"}  # web is not selected
    assert {"pol/p/allowed", "pol/p/dropped"} <= dp.counters
    assert counter_names("p") == ("pol/p/allowed", "pol/p/dropped")


@pytest.mark.parametrize(
    "rule, expected",
    [
        # every peer, every port
        (
            {},
            [
                'ip daddr @pol/p/sel4 counter name "pol/p/allowed" return',
                'ip6 daddr @pol/p/sel6 counter name "pol/p/allowed" return',
            ],
        ),
        # names: a set of the matching containers' addresses, one rule per family
        (
            {
                "from": [{"names": ["web"]}],
                "ports": [{"port": 80}, {"port": 8000, "endPort": 8080}],
            },
            [
                "ip daddr @pol/p/sel4 ip saddr @pol/p/in0/names4 tcp dport { 80, 8000-8080 } "
                'counter name "pol/p/allowed" return',
                "ip6 daddr @pol/p/sel6 ip6 saddr @pol/p/in0/names6 tcp dport { 80, 8000-8080 } "
                'counter name "pol/p/allowed" return',
            ],
        ),
        # cidr (v4 only: no v6 rule); overlapping ranges merged; protocols
        (
            {
                "from": [{"cidr": "192.0.2.0/24"}, {"cidr": "192.0.2.128/25"}],
                "ports": [
                    {"protocol": "udp", "port": 53},
                    {"protocol": "icmp"},
                    {"protocol": "sctp"},
                ],
            },
            [
                "ip daddr @pol/p/sel4 ip saddr { 192.0.2.0/24 } meta l4proto icmp "
                'counter name "pol/p/allowed" return',
                "ip daddr @pol/p/sel4 ip saddr { 192.0.2.0/24 } meta l4proto sctp "
                'counter name "pol/p/allowed" return',
                "ip daddr @pol/p/sel4 ip saddr { 192.0.2.0/24 } udp dport { 53 } "
                'counter name "pol/p/allowed" return',
            ],
        ),
        # a network: its subnets
        (
            {"from": [{"network": "green"}], "ports": [{"protocol": "icmp"}]},
            [
                "ip daddr @pol/p/sel4 ip saddr { 10.2.0.0/16 } meta l4proto icmp counter name "
                '"pol/p/allowed" return',
            ],
        ),
    ],
)
def test_ingress_rule_forms(rule, expected):
    dp = plan({"name": "p", "network": "blue", "select": {}, "ingress": [rule]})
    assert chain(dp, "in/blue")[: len(expected)] == expected
    assert chain(dp, "in/blue")[len(expected)].endswith('counter name "pol/p/dropped"')


def test_named_peers_follow_containers_of_the_named_network_on_every_host():
    dp = plan(
        {
            "name": "p",
            "network": "blue",
            "select": {"names": ["db"]},
            "ingress": [{"from": [{"names": ["web"]}, {"network": "green", "names": ["a*"]}]}],
        }
    )
    assert dp.members["pol/p/in0/names4"] == {"10.1.1.2", "10.2.0.2"}
    assert dp.members["pol/p/in0/names6"] == set()


def test_egress_judges_the_source_and_names_the_destination():
    dp = plan(
        {"name": "p", "network": "blue", "select": {}, "egress": [{"to": [{"cidr": "fd09::/64"}]}]}
    )
    assert chain(dp, "out/blue")[0] == (
        'ip6 saddr @pol/p/sel6 ip6 daddr { fd09::/64 } counter name "pol/p/allowed" return'
    )
    assert dp.members["out4"] == {"10.1.0.2 : jump out/blue"}


def test_only_peers_naming_another_network_open_holes_in_the_isolation():
    dp = plan(
        {
            "name": "p",
            "network": "blue",
            "select": {},
            "ingress": [
                {"from": [{"network": "green"}, {"cidr": "10.0.0.0/8"}, {"names": ["web"]}]},
                {"from": [{"network": "green", "names": ["api"]}], "ports": [{"port": 443}]},
            ],
        }
    )
    assert chain(dp, "cross") == [
        "ip daddr @pol/p/sel4 ip saddr { 10.2.0.0/16 } return",
        "ip daddr @pol/p/sel4 ip saddr @pol/p/in1/names4 tcp dport { 443 } return",
        "ip6 daddr @pol/p/sel6 ip6 saddr @pol/p/in1/names6 tcp dport { 443 } return",
        'counter name "isolation/dropped" drop',
    ]


def test_policies_of_unknown_networks_are_left_out():
    dp = plan({"name": "p", "network": "blue", "select": {}, "ingress": []}, networks=[GREEN])
    assert "pol/p/allowed" not in dp.counters and "pol/p/sel4" not in dp.members


def test_single_stack_containers_of_either_family_mix():
    v6_only = ep("blue", "h1", "fd01::7", names=["db-7"])
    dp = plan(POLICY, endpoints=[v6_only, *ENDPOINTS])
    assert dp.members["pol/p/sel6"] == {"fd01::2", "fd01::7"}
    assert dp.members["pol/p/sel4"] == {"10.1.0.2"}


def test_the_plan_does_not_depend_on_input_order():
    docs = [
        {"name": n, "network": "blue", "select": {}, "ingress": [{"from": [{"names": ["w*"]}]}]}
        for n in ("b", "a", "c")
    ]
    shuffled = ENDPOINTS[:]
    random.Random(4).shuffle(shuffled)
    assert plan(*docs) == plan(*reversed(docs), endpoints=shuffled)


# -- batches ---------------------------------------------------------------------------

POLICY = {"name": "p", "network": "blue", "select": {"names": ["db*"]}, "ingress": []}


def test_render_replaces_the_table_atomically_then_fills_the_sets():
    lines = render(plan(POLICY)).splitlines()
    assert lines[:3] == [
        "add table inet netplug",
        "delete table inet netplug",
        "add table inet netplug",
    ]
    assert "add set inet netplug pol/p/sel4 { type ipv4_addr; }" in lines
    assert "add set inet netplug isolated4 { type ipv4_addr; flags interval; }" in lines
    assert "add map inet netplug in4 { type ipv4_addr : verdict; }" in lines
    assert "add counter inet netplug pol/p/dropped" in lines
    hook = "type filter hook forward priority filter; policy accept;"
    assert f"add chain inet netplug forward {{ {hook} }}" in lines
    assert "add rule inet netplug forward jump isolation" in lines
    assert "add element inet netplug pol/p/sel4 { 10.1.0.2 }" in lines
    assert "add element inet netplug in4 { 10.1.0.2 : jump in/blue }" in lines
    # netplug's table only: never another program's, never the whole ruleset
    assert all(" inet netplug" in line for line in lines)
    assert not [line for line in lines if "ruleset" in line]
    # declarations before the rules that use them, elements last
    first_rule = next(i for i, line in enumerate(lines) if line.startswith("add rule"))
    assert all(not line.startswith("add rule") for line in lines[first_rule:] if "element" in line)
    assert (
        max(
            i
            for i, line in enumerate(lines)
            if line.startswith(("add set", "add map", "add chain"))
        )
        < first_rule
    )


def test_a_new_container_is_set_elements_only():
    before = plan(POLICY)
    db2 = ep("blue", "h1", "10.1.0.3", names=["db-2"])
    after = plan(POLICY, endpoints=[*ENDPOINTS, db2])
    assert delta(before, after) == (
        "add element inet netplug in4 { 10.1.0.3 : jump in/blue }\n"
        "add element inet netplug pol/p/sel4 { 10.1.0.3 }\n"
    )
    # and back: a map's element goes by its key
    assert delta(after, before) == (
        "delete element inet netplug in4 { 10.1.0.3 }\n"
        "delete element inet netplug pol/p/sel4 { 10.1.0.3 }\n"
    )


def test_a_remote_container_touches_no_dispatch_map():
    after = plan(POLICY, endpoints=[*ENDPOINTS, ep("blue", "h2", "10.1.1.9", names=["db-9"])])
    assert delta(plan(POLICY), after) == "add element inet netplug pol/p/sel4 { 10.1.1.9 }\n"


def test_a_new_network_adds_its_subnets_and_rewrites_the_rules_in_place():
    before = plan(networks=[BLUE, OPEN])
    step = delta(before, plan(networks=[BLUE, GREEN, OPEN])).splitlines()
    assert "add element inet netplug isolated4 { 10.2.0.0/16 }" in step
    assert "flush chain inet netplug isolation" in step
    assert not [line for line in step if line.startswith(("delete", "add set", "add counter"))]


def test_unchanged_is_empty():
    assert delta(plan(POLICY), plan(POLICY)) == ""


def test_changed_rules_rewrite_every_chain_and_keep_counters_in_one_batch():
    other = {"name": "q", "network": "green", "select": {}, "egress": []}
    before, after = plan(POLICY, other), plan({**POLICY, "ingress": [{}]})
    lines = delta(before, after).splitlines()
    flushed = [line for line in lines if line.startswith("flush chain")]
    assert set(flushed) == {f"flush chain inet netplug {c}" for c in before.chains}
    assert lines[: len(flushed)] == flushed  # references go before anything is deleted
    # what is gone is deleted: q's sets, counters and green's egress chain
    assert "delete set inet netplug pol/q/sel4" in lines
    assert "delete counter inet netplug pol/q/allowed" in lines
    assert "delete chain inet netplug out/green" in lines
    # p's counters stay (never deleted, never re-added: they keep counting)
    assert not [line for line in lines if "counter inet netplug pol/p/" in line]
    assert (
        'add rule inet netplug in/blue ip daddr @pol/p/sel4 counter name "pol/p/allowed" return'
        in lines
    )
    assert not [line for line in lines if "table" in line.split()[1:2]]  # the table stays
    assert delta(None, after) == render(after)


# -- one container at a time (the agent's path for ADD and DEL) ------------------------

RICH = [
    POLICY,
    {
        "name": "q",
        "network": "blue",
        "select": {},
        "egress": [{"to": [{"names": ["web*"]}, {"network": "green", "names": ["a*"]}]}],
    },
]


@pytest.mark.parametrize(
    "new",
    [
        ep("blue", "h1", "10.1.0.7", "fd01::7", names=["db-7"]),  # selected, local
        ep("blue", "h2", "10.1.1.7", names=["web-7"]),  # a named peer, remote
        ep("green", "h1", "10.2.0.7", names=["api-2"]),  # a peer of another network
        ep("open", "h1", "10.3.0.7", names=["x"]),  # nothing selects it
    ],
)
def test_a_containers_share_is_exactly_what_it_adds_to_the_plan(new):
    compiled = compile_plan(policies(*RICH), NETWORKS)
    before = compiled.dataplane(ENDPOINTS, "h1")
    after = compiled.dataplane([*ENDPOINTS, new], "h1")
    share = compiled.elements(new, "h1")
    assert before.plus(share) == after
    assert after.minus(share) == before
    assert add_elements(share) == delta(before, after)
    assert delete_elements(share) == delta(after, before)


def test_the_dispatch_share_is_only_for_this_hosts_containers():
    compiled = compile_plan(policies(POLICY), NETWORKS)
    db = ep("blue", "h2", "10.1.1.8", names=["db-8"])
    assert compiled.elements(db, "h2") == {
        "in4": {"10.1.1.8 : jump in/blue"},
        "pol/p/sel4": {"10.1.1.8"},
    }
    assert compiled.elements(db, "h1") == {"pol/p/sel4": {"10.1.1.8"}}


def test_a_plan_filled_with_each_containers_share_is_its_dataplane():
    compiled = compile_plan(policies(*RICH), NETWORKS)
    shares = [compiled.elements(e, "h1") for e in ENDPOINTS]
    assert compiled.filled(shares) == compiled.dataplane(ENDPOINTS, "h1")
    assert compiled.filled([]) == compiled.dataplane([], "h1") == compiled.base


# -- generations: a change of rules has every connection judged again --------------

DENYING = {"name": "p", "network": "blue", "select": {"names": ["db"]}, "ingress": []}
OPENING = {**DENYING, "ingress": [{"from": [{"names": ["web"]}]}]}


@pytest.mark.parametrize(
    ("before", "after", "bumped"),
    [
        # (policies, networks) before -> after
        (((DENYING,), NETWORKS), ((DENYING,), NETWORKS), False),  # the same rules
        (((), NETWORKS), ((), NETWORKS), False),  # isolation only, unchanged
        (((DENYING,), NETWORKS), ((OPENING,), NETWORKS), True),  # a policy changed
        (((), NETWORKS), ((DENYING,), NETWORKS), True),  # a policy applied
        (((DENYING,), NETWORKS), ((), NETWORKS), True),  # a policy deleted
        (((), NETWORKS), ((), [BLUE, OPEN]), True),  # an isolated network went
        (((), NETWORKS), ((), [BLUE, GREEN]), True),  # an open one: its subnet scopes the mark
        (((), [BLUE, GREEN, replace(OPEN, isolate=True)]), ((), NETWORKS), True),  # isolate off
    ],
)
def test_the_generation_changes_exactly_when_the_rules_do(before, after, bumped):
    old = plan(*before[0], networks=before[1])
    new = settled(old, plan(*after[0], networks=after[1]))
    assert (new.generation != old.generation) is bumped
    assert new.generation & 0xFFFFFF00 == new.generation != 0  # netplug's bits only
    # every chain rewritten (the new generation in its rules) exactly when bumped
    assert ("flush chain inet netplug forward" in delta(old, new)) is bumped


@pytest.mark.parametrize(
    "change",
    [
        lambda dp: dp.plus({"pol/p/sel4": frozenset({"10.1.9.9"})}),  # a container came
        lambda dp: dp.minus({"pol/p/sel4": frozenset({"10.1.0.2"})}),  # one went
    ],
)
def test_containers_coming_and_going_keep_the_generation(change):
    old = plan(DENYING)
    new = settled(old, change(old))
    assert new.generation == old.generation
    assert "rule" not in delta(old, new)


def test_the_generation_is_the_rules_own_whoever_compiles_them():
    # a restarted agent and the plugin without one write the same generation
    a = plan(DENYING, endpoints=ENDPOINTS, me="h1")
    b = plan(DENYING, endpoints=[WEB], me="h2")
    assert (a.generation, a.digest) == (b.generation, b.digest)
    assert a.generation != plan().generation


def _listing_of(dp: Dataplane) -> dict:
    """What ``nft -j`` lists of the fast-path rule's comment, as ``render`` wrote it."""
    (line,) = [r for r in render(dp).splitlines() if "comment" in r]
    comment = line.split('comment "')[1].rstrip('"')
    rule = {"family": "inet", "table": "netplug", "chain": "forward", "comment": comment}
    return {"nftables": [{"chain": {"name": "forward"}}, {"rule": rule}]}


def test_a_restart_reads_the_generation_back_and_keeps_it_for_the_same_rules():
    dp = plan(DENYING)
    listed = from_listing(_listing_of(dp))
    assert (listed.generation, listed.digest) == (dp.generation, dp.digest)
    assert settled(listed, plan(DENYING)).generation == dp.generation
    assert settled(listed, plan(OPENING)).generation != dp.generation


def test_a_generation_kept_over_a_collision_is_kept_across_a_restart():
    dp = plan(DENYING)
    collided = settled(replace(plan(OPENING), generation=dp.generation), dp)
    assert collided.generation not in (0, dp.generation)  # two digests, one generation
    again = settled(from_listing(_listing_of(collided)), plan(DENYING))
    assert again.generation == collided.generation


def test_a_table_of_an_older_netplug_gets_a_generation():
    old = from_listing({"nftables": [{"chain": {"name": "forward"}}]})
    assert old.generation == 0
    assert settled(old, plan(DENYING)).generation == plan(DENYING).generation


def test_the_rendered_rules_carry_the_generation_and_its_stamp():
    dp = plan(DENYING)
    gen = f"0x{dp.generation:08x}"
    text = render(dp)
    assert (
        "add rule inet netplug forward ct state established ct mark and 0xffffff00 == "
        f'{gen} counter name "established/fast" accept '
        f'comment "generation {gen} of rules {dp.digest}"'
    ) in text
    keep = f"ct mark set ct mark and 0x000000ff or {gen}"
    assert f"add rule inet netplug forward ip saddr {{ 10.1.0.0/16, 10.2.0.0/15 }} {keep}" in text
    assert "add counter inet netplug established/fast" in text
    assert "$" not in text
