"""Validation of API registrations: names and bodies, valid and refused."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from netplug.dns.records import (
    InvalidRegistration,
    Registration,
    Srv,
    decode_body,
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
        ("API.Netplug.Internal.", "api"),
        ("db.prod.netplug.internal.", "db.prod"),
        ("x.example.org", "x.example.org"),  # no trailing dot: relative to the domain
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
        ("netplug.internal.", "empty"),
        # A trailing dot makes a name fully qualified: outside the domain it is refused.
        ("x.example.org.", "not inside netplug.internal"),
        ("api.", "not inside netplug.internal"),
        ("xnetplug.internal.", "not inside netplug.internal"),
        (".", "not inside netplug.internal"),
        ("a..netplug.internal.", "not a DNS label"),
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
        # a zone index: AAAA carries none, and no PTR ever matched it (was stored)
        ({"addresses": ["10.0.0.1", "fe80::1%eth0"]}, r'"addresses"\[1\] = .fe80::1%eth0.'),
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


# -- hostile bodies: every field, every wrong type -----------------------------------

GOOD_SRV = {"service": "_http._tcp", "port": 8080, "priority": 0, "weight": 0}
DEEP = [[[[[[[[[[[]]]]]]]]]]]
for _ in range(500):  # deep, yet within what json parses
    DEEP = [DEEP]
WRONG = {
    "null": None,
    "true": True,
    "float": 1.5,
    "inf": float("inf"),
    "negative": -1,
    "huge": 10**19,
    "long string": "x" * 70_000,
    "list": [],
    "object": {},
    "deep list": DEEP,
}
# field -> (where its value goes, what the error must name, wrong values that are valid there)
FIELDS = {
    "addresses": (("addresses",), '"addresses"', ()),
    "addresses[0]": (("addresses", 0), r'"addresses"\[0\]', ()),
    "ttl": (("ttl",), '"ttl"', ("null",)),  # no ttl: the name never expires
    "srv": (("srv",), '"srv"', ("list",)),  # no services
    "srv[0]": (("srv", 0), r'"srv"\[0\]', ()),
    "service": (("srv", 0, "service"), r'"srv"\[0\]: service', ()),
    "port": (("srv", 0, "port"), r'"srv"\[0\]: port', ()),
    "priority": (("srv", 0, "priority"), r'"srv"\[0\]: priority', ()),
    "weight": (("srv", 0, "weight"), r'"srv"\[0\]: weight', ()),
}


def _body_with(path: tuple, value: object) -> dict:
    body = {"addresses": ["10.0.0.1"], "ttl": 30, "srv": [dict(GOOD_SRV)]}
    at: object = body
    for step in path[:-1]:
        at = at[step]  # type: ignore[index]
    at[path[-1]] = value  # type: ignore[index]
    return body


@pytest.mark.parametrize(
    ("field", "kind"),
    [(f, k) for f, (_, _, valid) in FIELDS.items() for k in WRONG if k not in valid],
)
def test_every_field_refuses_every_wrong_type(field: str, kind: str) -> None:
    path, named, _ = FIELDS[field]
    with pytest.raises(InvalidRegistration, match=named) as refused:
        parse_registration("api", _body_with(path, WRONG[kind]), D)
    assert len(str(refused.value)) < 400  # the value is quoted cut short, never whole


def test_srv_names_longer_than_a_dns_name_are_refused() -> None:
    """``_http._tcp.NAME.<domain>`` must itself be a name a client can ask for (at most
    253 characters): a name that fits alone was stored with SRV records nobody could
    query."""
    name = ".".join(["a" * 60] * 3) + ".b" * 5  # 192 characters, 209 with ".netplug.internal"
    body = {"addresses": ["10.0.0.1"], "srv": [{"service": "_http._tcp", "port": 80}]}
    assert parse_registration(name, {"addresses": ["10.0.0.1"]}, D).name == name
    assert parse_registration(name, body, D).srv
    longer = name + ".c" * 17  # 226 alone, 243 with the domain, 254 with "_http._tcp."
    assert parse_registration(longer, {"addresses": ["10.0.0.1"]}, D).name == longer
    with pytest.raises(InvalidRegistration, match=r"_http\._tcp\.NAME.* 253"):
        parse_registration(longer, body, D)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"[" * 1100 + b"]" * 1100, "nested too deeply"),  # issue 9 item 11: was a 500
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
        (b'{"addresses": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
        (b'{"addresses": ["10.0.0.1"], "ttl": NaN}', "NaN is not JSON"),
        (b'{"addresses": ["10.0.0.1"], "ttl": -Infinity}', "-Infinity is not JSON"),
        (b'{"addresses": ["10.0.0.1"], "ttl": ' + b"9" * 5000 + b"}", "too large"),
        (b'{"addresses": ["10.0.0.1"], "ttl": -' + b"9" * 21 + b"}", "too large"),
        (b'{"addresses": ["\\u00ff"]}', "not an IPv4"),
        (b'{"addresses": ["\xff"]}', "not JSON"),
        (b"\xff\xfe\x00{", "not JSON"),
        (b"", "not JSON"),
        (b'{"addresses": ["10.0.0.1"]', "not JSON"),
    ],
)
def test_hostile_raw_bodies(raw: bytes, fragment: str) -> None:
    with pytest.raises(InvalidRegistration, match=fragment) as refused:
        parse_registration("api", decode_body(raw), D)
    assert len(str(refused.value)) < 400


def test_decode_body_reads_plain_json() -> None:
    assert decode_body(b'{"addresses": ["10.0.0.1"], "ttl": 30}') == {
        "addresses": ["10.0.0.1"],
        "ttl": 30,
    }
