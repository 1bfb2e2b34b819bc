"""to_json / from_json: the Result model in every CNI version, and prevResult parsing."""

import dataclasses
from ipaddress import ip_address, ip_interface, ip_network

import pytest

from netplug.cni.errors import CNIError
from netplug.cni.netconf import SUPPORTED_VERSIONS
from netplug.cni.result import DNS, Interface, IPConfig, Result, Route, from_json, to_json

V4 = IPConfig(ip_interface("10.244.1.5/24"), ip_address("10.244.1.1"), interface=2)
V4_SECOND = IPConfig(ip_interface("10.244.1.6/24"), None, interface=2)
V6 = IPConfig(ip_interface("fd00:244:0:1::5/64"), ip_address("fd00:244:0:1::1"), interface=2)
DEFAULT4 = Route(ip_network("0.0.0.0/0"), ip_address("10.244.1.1"))
DEFAULT6 = Route(ip_network("::/0"), ip_address("fd00:244:0:1::1"))
TUNED = Route(
    ip_network("10.96.0.0/12"), None, mtu=1400, advmss=1360, priority=10, table=100, scope=0
)
FULL = Result(
    interfaces=(
        Interface("np-blue", "02:00:00:00:00:01"),
        Interface("veth1234", "02:00:00:00:00:02"),
        Interface("eth0", "02:00:00:00:00:03", mtu=1450, sandbox="/run/netns/c1"),
    ),
    ips=(V4, V4_SECOND, V6),
    routes=(DEFAULT4, DEFAULT6, TUNED),
    dns=DNS(
        nameservers=("10.244.1.1",),
        domain="blue.netplug.internal",
        search=("blue.netplug.internal",),
        options=("ndots:1",),
    ),
)

INTERFACES_JSON = [
    {"name": "np-blue", "mac": "02:00:00:00:00:01"},
    {"name": "veth1234", "mac": "02:00:00:00:00:02"},
    {"name": "eth0", "mac": "02:00:00:00:00:03", "mtu": 1450, "sandbox": "/run/netns/c1"},
]
IPS_JSON = [
    {"interface": 2, "address": "10.244.1.5/24", "gateway": "10.244.1.1"},
    {"interface": 2, "address": "10.244.1.6/24"},
    {"interface": 2, "address": "fd00:244:0:1::5/64", "gateway": "fd00:244:0:1::1"},
]
ROUTES_JSON = [
    {"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
    {"dst": "::/0", "gw": "fd00:244:0:1::1"},
    {"dst": "10.96.0.0/12"},
]
TUNED_JSON = {"dst": "10.96.0.0/12", "mtu": 1400, "advmss": 1360, "priority": 10, "table": 100}
DNS_JSON = {
    "nameservers": ["10.244.1.1"],
    "domain": "blue.netplug.internal",
    "search": ["blue.netplug.internal"],
    "options": ["ndots:1"],
}


def _current(version: str, ips: list, routes: list) -> dict:
    return {
        "cniVersion": version,
        "interfaces": INTERFACES_JSON,
        "ips": ips,
        "routes": routes,
        "dns": DNS_JSON,
    }


def _with_ip_version(ips: list) -> list:
    return [{"version": "6" if ":" in ip["address"] else "4", **ip} for ip in ips]


def _legacy(version: str) -> dict:
    return {
        "cniVersion": version,
        "ip4": {
            "ip": "10.244.1.5/24",
            "gateway": "10.244.1.1",
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}, {"dst": "10.96.0.0/12"}],
        },
        "ip6": {
            "ip": "fd00:244:0:1::5/64",
            "gateway": "fd00:244:0:1::1",
            "routes": [{"dst": "::/0", "gw": "fd00:244:0:1::1"}],
        },
        "dns": DNS_JSON,
    }


EXPECTED = {
    "1.1.0": _current("1.1.0", IPS_JSON, [*ROUTES_JSON[:2], {**TUNED_JSON, "scope": 0}]),
    "1.0.0": _current("1.0.0", IPS_JSON, ROUTES_JSON),
    "0.4.0": _current("0.4.0", _with_ip_version(IPS_JSON), ROUTES_JSON),
    "0.3.1": _current("0.3.1", _with_ip_version(IPS_JSON), ROUTES_JSON),
    "0.3.0": _current("0.3.0", _with_ip_version(IPS_JSON), ROUTES_JSON),
    "0.2.0": _legacy("0.2.0"),
    "0.1.0": _legacy("0.1.0"),
}


def test_expected_covers_every_supported_version() -> None:
    assert sorted(EXPECTED) == sorted(SUPPORTED_VERSIONS)


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_to_json_in_each_version(version: str) -> None:
    assert to_json(FULL, version) == EXPECTED[version]


def _carried(result: Result, version: str) -> Result:
    """What `version` can carry of `result`: the round trip's expected value."""
    routes = result.routes
    if version != "1.1.0":
        routes = tuple(Route(r.dst, r.gw) for r in routes)
    if version not in ("0.1.0", "0.2.0"):
        return dataclasses.replace(result, routes=routes)
    firsts = {}
    for ip in result.ips:
        firsts.setdefault(ip.address.version, IPConfig(ip.address, ip.gateway))
    by_family = tuple(sorted(routes, key=lambda r: r.dst.version))  # ip4 routes, then ip6
    return Result(ips=tuple(firsts.values()), routes=by_family, dns=result.dns)


SMALL = Result(ips=(IPConfig(ip_interface("10.0.0.2/8")),))


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
@pytest.mark.parametrize("result", [FULL, SMALL, Result()], ids=["full", "small", "empty"])
def test_round_trip(result: Result, version: str) -> None:
    assert from_json(to_json(result, version)) == _carried(result, version)


@pytest.mark.parametrize("version", ["1.1.0", "1.0.0", "0.4.0", "0.3.1", "0.3.0"])
def test_empty_fields_are_omitted(version: str) -> None:
    assert to_json(Result(), version) == {"cniVersion": version}
    bare = Result(interfaces=(Interface("eth0"),), ips=(IPConfig(ip_interface("10.0.0.2/8")),))
    out = to_json(bare, version)
    assert out["interfaces"] == [{"name": "eth0"}]
    assert "gateway" not in out["ips"][0] and "interface" not in out["ips"][0]
    assert "dns" not in out and "routes" not in out


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_legacy_without_addresses_or_dns_is_bare(version: str) -> None:
    assert to_json(Result(interfaces=(Interface("eth0"),)), version) == {"cniVersion": version}


def test_pointer_fields_keep_their_zero() -> None:
    """Go's *int: interface index 0 and scope 0 (global) are values, not "unset"."""
    result = Result(
        ips=(IPConfig(ip_interface("10.0.0.2/8"), interface=0),),
        routes=(Route(ip_network("10.0.0.0/8"), scope=0), Route(ip_network("::/0"))),
    )
    out = to_json(result, "1.1.0")
    assert out["ips"] == [{"interface": 0, "address": "10.0.0.2/8"}]
    assert out["routes"] == [{"dst": "10.0.0.0/8", "scope": 0}, {"dst": "::/0"}]


def test_dns_with_only_a_domain() -> None:
    out = to_json(Result(dns=DNS(domain="x.test")), "1.0.0")
    assert out == {"cniVersion": "1.0.0", "dns": {"domain": "x.test"}}


@pytest.mark.parametrize("version", ["0.5.0", "2.0.0", ""])
def test_to_json_rejects_unknown_versions(version: str) -> None:
    with pytest.raises(CNIError) as e:
        to_json(FULL, version)
    assert e.value.code == 1
    assert "1.1.0" in e.value.msg


# --- prevResult / delegate results as real plugins write them --------------------------

PREV_RESULTS = [
    (
        "1.1.0 bridge",
        {
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth0", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/x"},
            ],
            "ips": [{"interface": 2, "address": "10.1.0.5/16", "gateway": "10.1.0.1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1", "table": 7, "scope": 253}],
            "dns": {"nameservers": ["10.1.0.1"]},
        },
        Result(
            interfaces=(
                Interface("cni0", "aa:bb:cc:dd:ee:01"),
                Interface("veth0", "aa:bb:cc:dd:ee:02"),
                Interface("eth0", "aa:bb:cc:dd:ee:03", sandbox="/run/netns/x"),
            ),
            ips=(IPConfig(ip_interface("10.1.0.5/16"), ip_address("10.1.0.1"), 2),),
            routes=(Route(ip_network("0.0.0.0/0"), ip_address("10.1.0.1"), table=7, scope=253),),
            dns=DNS(nameservers=("10.1.0.1",)),
        ),
    ),
    (
        "1.0.0 host-local (abbreviated IPAM result)",
        {
            "cniVersion": "1.0.0",
            "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1"}],
            "dns": {},
        },
        Result(ips=(IPConfig(ip_interface("10.1.0.5/16"), ip_address("10.1.0.1")),)),
    ),
    (
        "0.4.0 with ips[].version and unknown keys",
        {
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x", "socketPath": "/s"}],
            "ips": [{"version": "6", "interface": 0, "address": "fd00::5/64"}],
            "routes": [{"dst": "fd00::/8"}],
        },
        Result(
            interfaces=(Interface("eth0", sandbox="/run/netns/x"),),
            ips=(IPConfig(ip_interface("fd00::5/64"), None, 0),),
            routes=(Route(ip_network("fd00::/8")),),
        ),
    ),
    (
        "0.3.1 route dst with host bits",
        {"cniVersion": "0.3.1", "routes": [{"dst": "10.1.2.3/16", "gw": "10.1.0.1"}]},
        Result(routes=(Route(ip_network("10.1.0.0/16"), ip_address("10.1.0.1")),)),
    ),
    (
        "0.2.0",
        {
            "cniVersion": "0.2.0",
            "ip4": {
                "ip": "10.1.0.5/16",
                "gateway": "10.1.0.1",
                "routes": [{"dst": "0.0.0.0/0"}],
            },
            "ip6": {"ip": "fd00::5/64"},
            "dns": {"search": ["a.test"]},
        },
        Result(
            ips=(
                IPConfig(ip_interface("10.1.0.5/16"), ip_address("10.1.0.1")),
                IPConfig(ip_interface("fd00::5/64")),
            ),
            routes=(Route(ip_network("0.0.0.0/0")),),
            dns=DNS(search=("a.test",)),
        ),
    ),
    (
        "0.1.0",
        {"cniVersion": "0.1.0", "ip4": {"ip": "10.1.0.5/16"}},
        Result(ips=(IPConfig(ip_interface("10.1.0.5/16")),)),
    ),
    (
        "no cniVersion, legacy keys",
        {"ip4": {"ip": "10.1.0.5/16"}},
        Result(ips=(IPConfig(ip_interface("10.1.0.5/16")),)),
    ),
    (
        "no cniVersion, current keys",
        {"ips": [{"address": "10.1.0.5/16"}]},
        Result(ips=(IPConfig(ip_interface("10.1.0.5/16")),)),
    ),
    (
        "nulls as absent",
        {
            "cniVersion": "1.0.0",
            "interfaces": None,
            "ips": [{"address": "10.1.0.5/16", "gateway": None}],
        },
        Result(ips=(IPConfig(ip_interface("10.1.0.5/16")),)),
    ),
]


@pytest.mark.parametrize(
    ("data", "expected"),
    [case[1:] for case in PREV_RESULTS],
    ids=[case[0] for case in PREV_RESULTS],
)
def test_from_json_reads_every_version(data: dict, expected: Result) -> None:
    assert from_json(data) == expected


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ([], ["result", "an object"]),
        ({"cniVersion": "9.9.9"}, ["cniVersion", '"9.9.9"']),
        ({"cniVersion": 1}, ["cniVersion", "a string"]),
        ({"interfaces": "eth0"}, ["interfaces", "a list"]),
        ({"interfaces": ["eth0"]}, ["interfaces[0]", "an object"]),
        ({"interfaces": [{"mac": "x"}]}, ["interfaces[0].name is missing"]),
        ({"interfaces": [{"name": "e", "mtu": -1}]}, ["interfaces[0].mtu", "got -1"]),
        ({"interfaces": [{"name": "e", "mtu": "1500"}]}, ["interfaces[0].mtu", "an integer"]),
        ({"ips": [{}]}, ["ips[0].address is missing"]),
        ({"ips": [{"address": "10.1.0.5"}]}, ["ips[0].address", '"10.1.0.5"', "prefix"]),
        ({"ips": [{"address": "bogus/24"}]}, ["ips[0].address", '"bogus/24"']),
        ({"ips": [{"address": "10.1.0.5/33"}]}, ["ips[0].address"]),
        ({"ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1/16"}]}, ["ips[0].gateway"]),
        ({"ips": [{"address": "10.1.0.5/16", "interface": -1}]}, ["ips[0].interface", "-1"]),
        ({"ips": [{"address": "10.1.0.5/16", "interface": "0"}]}, ["ips[0].interface"]),
        ({"routes": [{"gw": "10.0.0.1"}]}, ["routes[0].dst is missing"]),
        ({"routes": [{"dst": "default"}]}, ["routes[0].dst", '"default"']),
        ({"routes": [{"dst": "0.0.0.0/0", "gw": "x"}]}, ["routes[0].gw", '"x"']),
        ({"routes": [{"dst": "0.0.0.0/0", "table": -2}]}, ["routes[0].table"]),
        ({"routes": [{"dst": "0.0.0.0/0", "scope": "link"}]}, ["routes[0].scope"]),
        ({"dns": "8.8.8.8"}, ["dns", "an object"]),
        ({"dns": {"nameservers": "8.8.8.8"}}, ["dns.nameservers", "a list"]),
        ({"dns": {"nameservers": [8]}}, ["dns.nameservers[0]", "a string"]),
        ({"dns": {"domain": 1}}, ["dns.domain"]),
        ({"cniVersion": "0.2.0", "ip4": "10.1.0.5/16"}, ["ip4", "an object"]),
        ({"cniVersion": "0.2.0", "ip4": {}}, ["ip4.ip is missing"]),
        ({"cniVersion": "0.2.0", "ip6": {"ip": "fd00::5"}}, ["ip6.ip"]),
        ({"ip4": {"ip": "10.0.0.1/8", "routes": [{"dst": 0}]}}, ["ip4.routes[0].dst"]),
    ],
)
def test_malformed_results_are_error_6_naming_the_field(data, fragments: list) -> None:
    with pytest.raises(CNIError) as e:
        from_json(data)
    assert e.value.code == 6
    for fragment in fragments:
        assert fragment in e.value.msg
