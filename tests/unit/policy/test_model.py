"""The policy model: JSON in, validated policies or every error with its JSON path."""

from __future__ import annotations

import json
from ipaddress import ip_network

import pytest
from policy_examples import DESIGN_EXAMPLE

from netplug.policy.model import (
    MAX_DOCUMENT,
    Peer,
    Policy,
    PolicyError,
    Port,
    Rule,
    name_pattern,
    parse,
)

NETWORKS = {"blue", "green"}


def errors_of(doc: object) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse(json.dumps(doc), NETWORKS)
    return caught.value.errors


def test_the_design_example_parses():
    (p,) = parse(json.dumps(DESIGN_EXAMPLE), NETWORKS)
    assert p == Policy(
        "db-from-web",
        "blue",
        ("db", "db-*"),
        ingress=(
            Rule(
                peers=(
                    Peer(names=("web*",)),
                    Peer(network="green", names=("api",)),
                    Peer(cidr=ip_network("192.0.2.0/24")),
                ),
                ports=(Port("tcp", 5432),),
            ),
        ),
        egress=None,
    )


@pytest.mark.parametrize(
    "doc, expected",
    [
        # select {} is everything; an absent key leaves that direction alone
        ({"name": "a", "network": "blue", "select": {}}, Policy("a", "blue")),
        # ingress [] is "accept nothing new"
        (
            {"name": "a", "network": "blue", "select": {}, "ingress": []},
            Policy("a", "blue", ingress=()),
        ),
        # a rule without from/ports: every peer, every port
        (
            {"name": "a", "network": "blue", "select": {}, "egress": [{}]},
            Policy("a", "blue", egress=(Rule(),)),
        ),
        # protocol defaults to tcp; ranges; icmp without port; case of protocol and globs
        (
            {
                "name": "a",
                "network": "blue",
                "select": {"names": ["Web-?"]},
                "ingress": [
                    {
                        "from": [{"network": "green"}],
                        "ports": [
                            {"port": 80},
                            {"protocol": "UDP", "port": 5000, "endPort": 5010},
                            {"protocol": "icmp"},
                            {"protocol": "sctp"},
                        ],
                    }
                ],
            },
            Policy(
                "a",
                "blue",
                ("web-?",),
                ingress=(
                    Rule(
                        (Peer(network="green"),),
                        (
                            Port("tcp", 80),
                            Port("udp", 5000, 5010),
                            Port("icmp"),
                            Port("sctp"),
                        ),
                    ),
                ),
            ),
        ),
    ],
)
def test_valid_forms(doc, expected):
    assert parse(json.dumps(doc), NETWORKS) == (expected,)
    # The stored form parses back to the same policy.
    assert parse(json.dumps(expected.to_json()), NETWORKS) == (expected,)


def ok(**over):
    return {"name": "p", "network": "blue", "select": {}, **over}


@pytest.mark.parametrize(
    "doc, expected",
    [
        (
            ok(network="purple"),
            'network: expected a known network (known: blue, green), got "purple"',
        ),
        (ok(network=3), "network: expected a network name"),
        (ok(name="db-*"), "name: expected a policy name of 1 to 63 letters"),
        (ok(name="x" * 64), "name: expected a policy name of 1 to 63"),
        ({"network": "blue", "select": {}}, "name: expected a policy name"),
        ({"name": "p", "network": "blue"}, "select: expected a selector object (required"),
        (ok(select={"names": []}), "select.names: expected at least one name glob"),
        (ok(select={"names": ["web[0-9]"]}), "select.names[0]: expected a glob of 1 to 63"),
        (ok(select={"labels": {}}), "select.labels: unknown field (known: names)"),
        (ok(colour="red"), "colour: unknown field"),
        (ok(ingress={}), "ingress: expected a list of ingress rules"),
        (ok(ingress=[{"to": []}]), "ingress[0].to: unknown field (known: from, ports)"),
        (ok(egress=[{"from": []}]), "egress[0].from: unknown field (known: to, ports)"),
        (ok(ingress=[{"from": [{}]}]), 'ingress[0].from[0]: expected one of "names", "network"'),
        (
            ok(ingress=[{"from": [{"network": "mauve"}]}]),
            "ingress[0].from[0].network: expected a known network",
        ),
        (
            ok(ingress=[{"from": [{"cidr": "10.0.0.1/8"}]}]),
            "ingress[0].from[0].cidr: expected a CIDR with no host bits set",
        ),
        (ok(ingress=[{"from": [{"cidr": "banana"}]}]), "ingress[0].from[0].cidr: expected a CIDR"),
        (
            ok(ingress=[{"from": [{"cidr": "10.0.0.0/8", "names": ["a"]}]}]),
            'ingress[0].from[0]: expected "cidr" alone',
        ),
        (
            ok(ingress=[{"ports": [{"protocol": "gre"}]}]),
            'ingress[0].ports[0].protocol: expected one of tcp, udp, sctp, icmp, got "gre"',
        ),
        (
            ok(ingress=[{"ports": [{"port": 0}]}]),
            "ingress[0].ports[0].port: expected a port number from 1 to 65535, got 0",
        ),
        (ok(ingress=[{"ports": [{"port": 65536}]}]), "ingress[0].ports[0].port: expected a port"),
        (ok(ingress=[{"ports": [{"port": "http"}]}]), "ingress[0].ports[0].port: expected a port"),
        (ok(ingress=[{"ports": [{"port": True}]}]), "ingress[0].ports[0].port: expected a port"),
        (
            ok(ingress=[{"ports": [{"port": 90, "endPort": 80}]}]),
            "ingress[0].ports[0].endPort: expected a port from 90",
        ),
        (
            ok(ingress=[{"ports": [{"endPort": 80}]}]),
            "ingress[0].ports[0].port: expected a port where endPort",
        ),
        (
            ok(ingress=[{"ports": [{"protocol": "icmp", "port": 8}]}]),
            "ingress[0].ports[0].port: expected no port with icmp",
        ),
        ([], "document: expected a policy object or a non-empty list"),
        ("policy", "document: expected a policy object"),
    ],
)
def test_each_bad_field_is_named_with_what_was_expected(doc, expected):
    found = errors_of(doc)
    assert any(e.startswith(expected) for e in found), found


def test_paths_in_a_list_start_with_the_index_and_every_error_is_reported():
    doc = [
        DESIGN_EXAMPLE,
        ok(name="q"),
        ok(
            name="r",
            network="purple",
            ingress=[{"ports": [{"port": 1}, {"port": 99999}]}],
            egress=[{"to": [{"cidr": "nope"}]}],
        ),
    ]
    assert errors_of(doc) == [
        '[2].network: expected a known network (known: blue, green), got "purple"',
        "[2].ingress[0].ports[1].port: expected a port number from 1 to 65535, got 99999",
        '[2].egress[0].to[0].cidr: expected a CIDR with no host bits set ("192.0.2.0/24", '
        '"2001:db8::/32"), got "nope"',
    ]


def test_duplicate_names_are_refused_naming_both():
    assert errors_of([ok(name="a"), ok(name="b"), ok(name="a")]) == [
        '[2].name: expected a name not used before (also [0]), got "a"'
    ]


def test_a_document_over_the_limit_is_refused_before_it_is_decoded():
    big = b"[" + b" " * (5 * 1024 * 1024) + b"]"
    with pytest.raises(PolicyError) as caught:
        parse(big, NETWORKS)
    assert caught.value.errors == [
        f"document: expected at most {MAX_DOCUMENT} bytes (1 MiB), got {len(big)} bytes"
    ]


def test_undecodable_input_is_one_error():
    with pytest.raises(PolicyError) as caught:
        parse(b'{"name": ', NETWORKS)
    assert caught.value.errors[0].startswith("document: expected JSON, got Expecting value")


def test_deeply_nested_input_is_one_error_not_a_crash():
    with pytest.raises(PolicyError) as caught:
        parse(b"[" * 100_000, NETWORKS)
    assert caught.value.errors == ["document: expected JSON nested less deeply"]


def test_stored_records_parse_without_knowing_the_networks():
    assert parse(json.dumps(ok(network="gone")), None)[0].network == "gone"


@pytest.mark.parametrize(
    "globs, name, hit",
    [
        (["db"], "db", True),
        (["db"], "dbx", False),
        (["db-*"], "db-1", True),
        (["db-*"], "db", False),
        (["web-?"], "web-12", False),
        (["a", "b*"], "bee", True),
        (["*"], "", True),
    ],
)
def test_globs_match_whole_names(globs, name, hit):
    assert bool(name_pattern(globs).match(name)) is hit


def test_globs_and_names_are_case_insensitive():
    (p,) = parse(json.dumps(ok(select={"names": ["Web-*"]})), NETWORKS)
    assert name_pattern(p.select).match("WEB-1".lower())
