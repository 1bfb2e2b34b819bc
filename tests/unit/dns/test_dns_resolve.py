"""The pure resolver: query bytes + snapshot -> reply, as tables of cases."""

from __future__ import annotations

import struct
from ipaddress import ip_address

import pytest
from dns_testing import ZONE, ask, attachment, block, query, rdata, registration
from dnslib import EDNS0, QTYPE, DNSRecord

from netplug.dns.registry import Snapshot
from netplug.dns.resolve import Forward, Reply, fit, resolve, servfail
from netplug.ipam.store.base import Event

SNAP = Snapshot.build(
    [
        attachment("blue", "h1", "c1", ["web"], ["10.244.1.5", "fd00:244:1::5"]),
        attachment("blue", "h2", "c2", ["web", "www"], ["10.244.2.5"]),
        attachment("blue", "h1", "c3", ["db"], ["10.244.1.6"]),
        attachment("red", "h1", "c4", ["web"], ["10.245.1.5"]),
        block("blue", "10.244.1.0/24"),
        block("blue", "10.244.2.0/24"),
        block("blue", "fd00:244:1::/64"),
        registration(
            "api",
            {
                "addresses": ["10.1.2.3", "fd00::3"],
                "srv": [{"service": "_http._tcp", "port": 8080, "priority": 1, "weight": 5}],
            },
        ),
        registration("short", {"addresses": ["10.1.2.4"], "ttl": 2}),
        registration("many", {"addresses": [f"10.9.0.{i}" for i in range(1, 41)]}),
        registration("db.prod", {"addresses": ["10.1.2.5"]}),
    ],
    revision=42,
)

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5


@pytest.mark.parametrize(
    ("name", "qtype", "network", "expected"),
    [
        ("web.blue.netplug.internal", "A", None, ["10.244.1.5", "10.244.2.5"]),
        ("web.blue.netplug.internal", "AAAA", None, ["fd00:244:1::5"]),
        ("web.blue.netplug.internal", "ANY", None, ["10.244.1.5", "10.244.2.5", "fd00:244:1::5"]),
        ("www.blue.netplug.internal", "A", None, ["10.244.2.5"]),
        ("web.red.netplug.internal", "A", None, ["10.245.1.5"]),
        ("web.red.netplug.internal", "A", "blue", ["10.245.1.5"]),  # full names work for anyone
        ("api.netplug.internal", "A", None, ["10.1.2.3"]),
        ("api.netplug.internal", "AAAA", None, ["fd00::3"]),
        ("db.prod.netplug.internal", "A", None, ["10.1.2.5"]),
        ("web", "A", "blue", ["10.244.1.5", "10.244.2.5"]),  # bare names for the network's clients
        ("web", "A", "red", ["10.245.1.5"]),
        ("web", "AAAA", "blue", ["fd00:244:1::5"]),
        ("db", "A", "BLUE", ["10.244.1.6"]),
    ],
)
def test_addresses(name: str, qtype: str, network: str | None, expected: list[str]) -> None:
    reply = ask(SNAP, name, qtype, network=network)
    assert isinstance(reply, DNSRecord)
    assert reply.header.rcode == NOERROR and reply.header.aa and reply.header.qr
    assert sorted(rdata(reply)) == sorted(expected)
    assert all(rr.ttl == 5 for rr in reply.rr)


@pytest.mark.parametrize(
    ("name", "network"),
    [
        ("web", None),  # no network: bare names are not ours
        ("web", "green"),  # a network without that name
        ("db", "red"),
        ("api", "blue"),  # API names are only NAME.<domain>
        ("example.com", "blue"),
        ("web.blue", "blue"),
        ("netplug.internal.example", None),
    ],
)
def test_forwarded(name: str, network: str | None) -> None:
    assert isinstance(ask(SNAP, name, network=network), Forward)


def test_forward_carries_limit_and_question() -> None:
    fwd = ask(SNAP, "example.com", "MX", edns=1400)
    assert isinstance(fwd, Forward)
    assert (fwd.qtype, fwd.limit) == (QTYPE.MX, 1400)
    assert fwd.question == b"\x07example\x03com\x00\x00\x0f\x00\x01"
    assert ask(SNAP, "example.com").limit == 512
    assert ask(SNAP, "example.com", edns=100).limit == 512  # below 512 counts as 512
    assert ask(SNAP, "example.com", tcp=True).limit == 65535


def test_case_is_echoed() -> None:
    reply = ask(SNAP, "WeB.BLUE.NetPlug.Internal")
    assert str(reply.q.qname) == "WeB.BLUE.NetPlug.Internal."
    assert {str(rr.rname) for rr in reply.rr} == {"WeB.BLUE.NetPlug.Internal."}
    assert sorted(rdata(reply)) == ["10.244.1.5", "10.244.2.5"]
    bare = ask(SNAP, "WEB", network="blue")
    assert str(bare.rr[0].rname) == "WEB."


@pytest.mark.parametrize(
    "name",
    [
        "nope.blue.netplug.internal",
        "nope.netplug.internal",
        "x.web.blue.netplug.internal",
        "_http._udp.api.netplug.internal",
    ],
)
def test_nxdomain_with_soa(name: str) -> None:
    reply = ask(SNAP, name)
    assert reply.header.rcode == NXDOMAIN and reply.header.aa
    assert reply.rr == []
    [soa] = reply.auth
    assert soa.rtype == QTYPE.SOA and str(soa.rname) == "netplug.internal."
    assert soa.rdata.times[0] == 42  # serial: the snapshot's revision
    assert soa.rdata.times[4] == 5  # negative TTL


@pytest.mark.parametrize(
    ("name", "qtype"),
    [
        ("web.blue.netplug.internal", "MX"),
        ("db.blue.netplug.internal", "AAAA"),  # v4 only
        ("blue.netplug.internal", "A"),  # empty non-terminal
        ("prod.netplug.internal", "A"),
        ("_tcp.api.netplug.internal", "SRV"),
        ("netplug.internal", "A"),
        ("api.netplug.internal", "PTR"),
    ],
)
def test_nodata_with_soa(name: str, qtype: str) -> None:
    reply = ask(SNAP, name, qtype)
    assert reply.header.rcode == NOERROR and reply.rr == []
    assert [rr.rtype for rr in reply.auth] == [QTYPE.SOA]


def test_apex_soa_ns_any() -> None:
    soa = ask(SNAP, "netplug.internal", "SOA")
    assert [rr.rtype for rr in soa.rr] == [QTYPE.SOA]
    assert str(soa.rr[0].rdata.mname) == "ns.netplug.internal."
    ns = ask(SNAP, "netplug.internal", "NS", server_address=ip_address("127.0.0.1"))
    assert rdata(ns) == ["ns.netplug.internal."]
    assert rdata(ns, "ar") == ["127.0.0.1"]  # glue: the listener's address
    glue = ask(SNAP, "ns.netplug.internal", server_address=ip_address("10.244.1.1"))
    assert rdata(glue) == ["10.244.1.1"]
    assert ask(SNAP, "ns.netplug.internal").header.rcode == NXDOMAIN  # wildcard listener: none
    any_ = ask(SNAP, "NetPlug.Internal", "ANY")
    assert sorted(rr.rtype for rr in any_.rr) == sorted([QTYPE.SOA, QTYPE.NS])


def test_srv_with_target_addresses() -> None:
    reply = ask(SNAP, "_http._tcp.api.netplug.internal", "SRV")
    [srv] = reply.rr
    assert (srv.rdata.priority, srv.rdata.weight, srv.rdata.port) == (1, 5, 8080)
    assert str(srv.rdata.target) == "api.netplug.internal."
    assert sorted(rdata(reply, "ar")) == ["10.1.2.3", "fd00::3"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("5.1.244.10.in-addr.arpa", ["web.blue.netplug.internal."]),
        ("5.2.244.10.in-addr.arpa", ["web.blue.netplug.internal.", "www.blue.netplug.internal."]),
        ("3.2.1.10.in-addr.arpa", ["api.netplug.internal."]),
        (ip_address("fd00:244:1::5").reverse_pointer, ["web.blue.netplug.internal."]),
        (ip_address("fd00::3").reverse_pointer.upper(), ["api.netplug.internal."]),
    ],
)
def test_ptr(name: str, expected: list[str]) -> None:
    reply = ask(SNAP, name, "PTR")
    assert reply.header.rcode == NOERROR and reply.header.aa
    assert sorted(rdata(reply)) == expected


def test_ptr_answers_a_containers_own_name_first() -> None:
    """podman adds the short container ID as an alias: sorted, it came first (digits
    sort before letters), so getent, ping and logs named the container 47b2220111f0
    rather than beta. The names come in the container's order, however it was built."""
    record = attachment("blue", "h1", "c9", ["beta", "web", "47b2220111f0"], ["10.244.1.9"])
    for snap in (Snapshot.build([record], 1), Snapshot().apply([Event("put", record)])):
        assert rdata(ask(snap, "9.1.244.10.in-addr.arpa", "PTR")) == [
            "beta.blue.netplug.internal.",
            "web.blue.netplug.internal.",
            "47b2220111f0.blue.netplug.internal.",
        ]


@pytest.mark.parametrize(
    ("name", "zone"),
    [
        ("99.1.244.10.in-addr.arpa", "1.244.10.in-addr.arpa."),
        (ip_address("fd00:244:1::99").reverse_pointer, "0.0.0.0.1.0.0.0.4.4.2.0.0.0.d.f.ip6.arpa."),
    ],
)
def test_ptr_nxdomain_inside_our_blocks(name: str, zone: str) -> None:
    reply = ask(SNAP, name, "PTR")
    assert reply.header.rcode == NXDOMAIN
    assert [str(rr.rname) for rr in reply.auth] == [zone]


@pytest.mark.parametrize(
    "name",
    [
        "8.8.8.8.in-addr.arpa",
        "1.244.10.in-addr.arpa",
        "x.1.244.10.in-addr.arpa",
        "1.2.3.ip6.arpa",
        "256.1.244.10.in-addr.arpa",
    ],
)
def test_other_reverse_names_forwarded(name: str) -> None:
    assert isinstance(ask(SNAP, name, "PTR"), Forward)


def test_ttl_capped_by_registration_ttl() -> None:
    assert [rr.ttl for rr in ask(SNAP, "short.netplug.internal").rr] == [2]


def test_rotation_variants() -> None:
    out = resolve(query("many.netplug.internal", edns=4096), SNAP, ZONE)
    assert isinstance(out, Reply) and len(out.variants) == 8
    firsts = [rdata(DNSRecord.parse(v))[0] for v in out.variants]
    assert len(set(firsts)) == 8
    sets = {frozenset(rdata(DNSRecord.parse(v))) for v in out.variants}
    assert len(sets) == 1 and len(next(iter(sets))) == 40
    two = resolve(query("web.blue.netplug.internal"), SNAP, ZONE)
    orders = [rdata(DNSRecord.parse(v)) for v in two.variants]
    assert orders == [["10.244.1.5", "10.244.2.5"], ["10.244.2.5", "10.244.1.5"]]
    assert len(resolve(query("db.blue.netplug.internal"), SNAP, ZONE).variants) == 1


def test_edns_payload_and_truncation() -> None:
    # 40 A records are ~680 bytes: too much for plain UDP, fine with EDNS or TCP.
    plain = ask(SNAP, "many.netplug.internal")
    assert plain.header.tc and plain.rr == [] and plain.ar == []
    edns = ask(SNAP, "many.netplug.internal", edns=4096)
    assert not edns.header.tc and len(edns.rr) == 40
    [opt] = edns.ar
    assert opt.rtype == QTYPE.OPT and opt.rclass == 1232
    small = ask(SNAP, "many.netplug.internal", edns=600)
    assert small.header.tc and [rr.rtype for rr in small.ar] == [QTYPE.OPT]
    assert len(ask(SNAP, "many.netplug.internal", tcp=True).rr) == 40
    assert ask(SNAP, "web.blue.netplug.internal").ar == []  # no EDNS in, none out


def test_badvers() -> None:
    q = DNSRecord.question("web.blue.netplug.internal")
    q.add_ar(EDNS0(udp_len=1232, version=1))
    reply = DNSRecord.parse(resolve(q.pack(), SNAP, ZONE).wire)
    assert reply.header.rcode == 0 and reply.ar[0].ttl >> 24 == 1  # extended rcode 16


def _header(
    qid: int = 7, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


QNAME = b"\x03web\x04blue\x07netplug\x08internal\x00"


@pytest.mark.parametrize(
    ("wire", "rcode"),
    [
        (_header() + b"\x03we", FORMERR),  # truncated question
        (_header(qd=2) + QNAME + b"\x00\x01\x00\x01", FORMERR),  # count says 2, one there
        (_header(qd=0), FORMERR),
        (_header(qd=2) + (QNAME + b"\x00\x01\x00\x01") * 2, FORMERR),  # two questions
        (_header() + b"\xc0\x0c\x00\x01\x00\x01", FORMERR),  # pointer to itself
        (_header() + b"\x01a\xc0\x0e\x00\x01\x00\x01", FORMERR),  # pointer forwards/loop
        (_header() + b"\x50" + b"a" * 80 + b"\x00\x00\x01\x00\x01", FORMERR),  # 80-byte label
        (
            _header() + b"\x3f" + b"a" * 63 + (b"\x3f" + b"b" * 63) * 4 + b"\x00\x00\x01\x00\x01",
            FORMERR,
        ),
        (_header(ar=1) + QNAME + b"\x00\x01\x00\x01" + b"\x00\x00\x29", FORMERR),  # cut OPT
        (_header(flags=0x2100) + QNAME + b"\x00\x01\x00\x01", NOTIMP),  # opcode UPDATE
        (_header() + b"\xff" * 40, FORMERR),
    ],
)
def test_malformed(wire: bytes, rcode: int) -> None:
    out = resolve(wire, SNAP, ZONE)
    assert isinstance(out, Reply) and not out.cacheable
    reply = DNSRecord.parse(out.wire)
    assert reply.header.id == 7 and reply.header.qr and reply.header.rcode == rcode


@pytest.mark.parametrize(
    "wire", [b"", b"\x00", _header()[:11], _header(flags=0x8100) + QNAME + b"\x00\x01\x00\x01"]
)
def test_dropped(wire: bytes) -> None:
    assert resolve(wire, SNAP, ZONE) is None  # too short, or a response


def test_two_opt_records_formerr() -> None:
    q = DNSRecord.question("web.blue.netplug.internal")
    q.add_ar(EDNS0(udp_len=1232))
    q.add_ar(EDNS0(udp_len=1232))
    assert DNSRecord.parse(resolve(q.pack(), SNAP, ZONE).wire).header.rcode == FORMERR


def test_other_class_refused() -> None:
    q = DNSRecord.question("version.bind", "TXT", "CH")
    assert DNSRecord.parse(resolve(q.pack(), SNAP, ZONE).wire).header.rcode == REFUSED


def test_rd_echoed_and_ra_set() -> None:
    q = DNSRecord.question("web.blue.netplug.internal")
    q.header.rd = 0
    reply = DNSRecord.parse(resolve(q.pack(), SNAP, ZONE).wire)
    assert reply.header.rd == 0 and reply.header.ra == 1


def test_servfail_and_fit() -> None:
    fwd = ask(SNAP, "www.example.com", edns=None)
    fail = DNSRecord.parse(servfail(fwd))
    assert fail.header.id == 0x1234 and fail.header.rcode == SERVFAIL
    assert str(fail.q.qname) == "www.example.com."
    big = DNSRecord.question("www.example.com").reply()
    big.header.id = 0x1234
    for i in range(60):
        big.add_answer(*DNSRecord.question("x").replyZone(f"www.example.com. 60 A 192.0.2.{i}").rr)
    wire = bytes(big.pack())
    cut = DNSRecord.parse(fit(wire, fwd))
    assert cut.header.tc and cut.rr == [] and str(cut.q.qname) == "www.example.com."
    assert fit(wire, ask(SNAP, "www.example.com", tcp=True)) == wire


def test_other_domain() -> None:
    from netplug.dns.resolve import Zone

    zone = Zone("Cluster.Test.", ttl=30)
    reply = ask(SNAP, "web.blue.cluster.test", zone=zone)
    assert rdata(reply) == ["10.244.1.5", "10.244.2.5"] and reply.rr[0].ttl == 30
    assert isinstance(ask(SNAP, "web.blue.netplug.internal", zone=zone), Forward)
