"""Validation of API registrations: names and bodies, valid and refused."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from netplug.dns.records import (
    InvalidRegistration,
    Registration,
    Srv,
    decode_registration,
    parse_name,
    parse_registration,
)

D = "netplug.internal"


@pytest.mark.parametrize(
    ("name", "rel"),
    [
        ("api", "api"),
        ("API", "api"),
        ("db.prod", "db.prod"),
        ("api.netplug.internal", "api"),
        ("api.netplug.internal.", "api"),
        ("a-1", "a-1"),
    ],
)
def test_names(name: str, rel: str) -> None:
    assert parse_name(name, D) == rel


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "empty"),
        ("netplug.internal", "empty"),
        ("-api", "not a DNS label"),
        ("a..b", "not a DNS label"),
        ("_http", "not a DNS label"),
        ("a_b", "not a DNS label"),
        ("x" * 64, "not a DNS label"),
        (".".join(["abcdefghi"] * 25), "too long"),
        ("ünï", "not a DNS label"),
    ],
)
def test_bad_names(name: str, fragment: str) -> None:
    with pytest.raises(InvalidRegistration, match=fragment):
        parse_name(name, D)


def test_full_registration_roundtrip() -> None:
    body = {
        "addresses": ["10.1.2.3", "FD00::3", "10.1.2.3"],
        "ttl": 30,
        "srv": [
            {"service": "_HTTP._tcp", "port": 8080},
            {"service": "_dns._udp", "port": 53, "priority": 1, "weight": 2},
        ],
    }
    reg = parse_registration("API", body, D)
    assert reg == Registration(
        "api",
        (ip_address("10.1.2.3"), ip_address("fd00::3")),
        30,
        (Srv("_http._tcp", 8080), Srv("_dns._udp", 53, 1, 2)),
    )
    assert decode_registration("api", reg.encode()) == reg
    assert parse_registration("x", {"addresses": ["10.0.0.1"]}, D).record() == {
        "addresses": ["10.0.0.1"]
    }


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([], "JSON object"),
        ({}, '"addresses"'),
        ({"addresses": []}, '"addresses"'),
        ({"addresses": "10.0.0.1"}, '"addresses"'),
        ({"addresses": ["10.0.0.256"]}, r'"addresses"\[0\]'),
        ({"addresses": [1]}, r'"addresses"\[0\]'),
        ({"addresses": ["10.0.0.1"] * 65}, "at most 64"),
        ({"addresses": ["10.0.0.1"], "ttl": 0}, '"ttl"'),
        ({"addresses": ["10.0.0.1"], "ttl": -5}, '"ttl"'),
        ({"addresses": ["10.0.0.1"], "ttl": 1.5}, '"ttl"'),
        ({"addresses": ["10.0.0.1"], "ttl": True}, '"ttl"'),
        ({"addresses": ["10.0.0.1"], "ttl": "30"}, '"ttl"'),
        ({"addresses": ["10.0.0.1"], "color": "red"}, "unknown field 'color'"),
        ({"addresses": ["10.0.0.1"], "srv": {}}, '"srv" must be a list'),
        ({"addresses": ["10.0.0.1"], "srv": ["_http._tcp"]}, "must be an object"),
        (
            {"addresses": ["10.0.0.1"], "srv": [{"service": "http._tcp", "port": 80}]},
            "_SERVICE._PROTO",
        ),
        ({"addresses": ["10.0.0.1"], "srv": [{"service": "_http", "port": 80}]}, "_SERVICE._PROTO"),
        ({"addresses": ["10.0.0.1"], "srv": [{"service": "_http._tcp"}]}, "port None"),
        ({"addresses": ["10.0.0.1"], "srv": [{"service": "_http._tcp", "port": 70000}]}, "port"),
        (
            {"addresses": ["10.0.0.1"], "srv": [{"service": "_a._tcp", "port": 1, "weight": -1}]},
            "weight",
        ),
        (
            {"addresses": ["10.0.0.1"], "srv": [{"service": "_a._tcp", "port": 1, "x": 1}]},
            "unknown field 'x'",
        ),
        (
            {"addresses": ["10.0.0.1"], "srv": [{"service": "_a._tcp", "port": 1}] * 17},
            "at most 16",
        ),
    ],
)
def test_bad_bodies(body: object, fragment: str) -> None:
    with pytest.raises(InvalidRegistration, match=fragment):
        parse_registration("api", body, D)
