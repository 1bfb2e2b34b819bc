"""The resolver core: one query's wire bytes and a registry snapshot in, a decision out.

No sockets, no store, no clock: ``resolve`` is a pure function, so the
server, the tests and the fuzzer call the same thing. Its outcomes:

- ``Reply``: packed answer(s) with the query's ID. ``variants`` holds the
  rotations of one answer (several addresses for a name are answered in a
  different order each time); the server sends one per query;
- ``Forward``: the name is not ours; the server asks the upstream resolvers;
- ``None``: drop the packet (not a query, or too short to answer).

What is ours (``Zone.domain`` is ``netplug.internal`` by default):

- ``<domain>`` itself: SOA and NS (``ns.<domain>``, answered with the
  listener's address unless the registry holds ``ns``);
- ``NAME.NETWORK.<domain>`` (containers) and ``NAME.<domain>`` (API names):
  A, AAAA, and SRV at ``_service._proto.NAME.<domain>``; a missing name
  is NXDOMAIN and an existing name without the asked type is NODATA, both
  with the SOA in the authority section (RFC 2308);
- the bare ``NAME`` for clients of ``NETWORK`` (the listener tells);
- PTR for every registered address, and NXDOMAIN for any other address of a
  block IPAM handed out.

Names are matched case-insensitively and answered with the question's case.
With EDNS(0) the reply carries an OPT record and may be as large as the
client's payload size; without it 512 bytes on UDP. A reply that does not fit
is sent empty with TC set, so that the client retries over TCP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from dnslib import (
    AAAA,
    CLASS,
    EDNS0,
    NS,
    PTR,
    QTYPE,
    RCODE,
    RR,
    SOA,
    SRV,
    A,
    DNSHeader,
    DNSLabel,
    DNSRecord,
)

from netplug.dns.registry import Node, Snapshot

Address = IPv4Address | IPv6Address

UDP_MIN = 512  # RFC 1035: the most a UDP client without EDNS accepts
TCP_MAX = 65535
OUR_PAYLOAD = 1232  # advertised in our OPT: the DNS flag day 2020 size, no fragments
MAX_ROTATIONS = 8  # distinct orders cached per answer; more addresses rotate in steps
BADVERS = 16
_ANY = QTYPE.ANY
_REVERSE_V4 = (b"in-addr", b"arpa")
_REVERSE_V6 = (b"ip6", b"arpa")
_HEX = frozenset(b"0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Zone:
    """The server's authoritative zone and answer settings."""

    domain: str = "netplug.internal"
    ttl: int = 5  # seconds, for answers and (SOA minimum) for negative answers
    labels: tuple[bytes, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        domain = self.domain.lower().strip(".")
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "labels", tuple(domain.encode().split(b".")))


@dataclass(frozen=True, slots=True)
class Reply:
    variants: tuple[bytes, ...]  # each a whole packed reply, with the query's ID
    rcode: int
    qtype: int | None  # None when the question could not be read
    cacheable: bool = True

    @property
    def wire(self) -> bytes:
        return self.variants[0]


@dataclass(frozen=True, slots=True)
class Forward:
    wire: bytes  # the query as received
    qtype: int
    limit: int  # the largest reply the client accepts
    question_end: int  # offset just past the question section

    @property
    def question(self) -> bytes:
        return self.wire[12 : self.question_end]


def resolve(
    wire: bytes,
    snap: Snapshot,
    zone: Zone,
    network: str | None = None,
    *,
    tcp: bool = False,
    server_address: Address | None = None,
) -> Reply | Forward | None:
    """Decide one query. ``network``: the network whose clients the listener
    serves (bare names resolve), None for none. ``tcp``: the reply may use up
    to 65535 bytes. Never raises: unreadable input is FORMERR or None."""
    if len(wire) < 12 or wire[2] & 0x80:
        return None  # too short for a header, or a response: never answer those
    if (wire[2] >> 3) & 0xF != 0:
        return _header_only(wire, RCODE.NOTIMP)
    try:
        query = DNSRecord.parse(wire)
    except Exception:  # dnslib raises several types, RecursionError included
        return _header_only(wire, RCODE.FORMERR)
    opts = [rr for rr in query.ar if rr.rtype == QTYPE.OPT]
    if len(query.questions) != 1 or len(opts) > 1 or not _sane(query.q.qname):
        return _header_only(wire, RCODE.FORMERR)
    opt = opts[0] if opts else None
    q = query.q
    if opt is not None and (opt.ttl >> 16) & 0xFF != 0:
        return _build(query, opt, TCP_MAX, BADVERS)
    limit = TCP_MAX if tcp else max(UDP_MIN, opt.rclass) if opt is not None else UDP_MIN
    if q.qclass not in (CLASS.IN, 255):  # IN or ANY (dnslib names it "*")
        return _build(query, opt, limit, RCODE.REFUSED)
    labels = tuple(label.lower() for label in q.qname.label)
    n = len(zone.labels)
    if labels[len(labels) - n :] == zone.labels and len(labels) >= n:
        return _authoritative(
            query, opt, limit, labels[: len(labels) - n], snap, zone, server_address
        )
    if labels[-2:] in (_REVERSE_V4, _REVERSE_V6):
        reply = _reverse(query, opt, limit, labels, snap, zone)
        if reply is not None:
            return reply
    elif network is not None and len(labels) == 1:
        node = snap.nodes.get(f"{_text(labels[0])}.{network.lower()}")
        if node is not None and node.addresses:
            return _answer(query, opt, limit, node, snap, zone)
    return Forward(wire, q.qtype, limit, _question_end(wire))


# -- our zone ------------------------------------------------------------------


def _authoritative(
    query: DNSRecord,
    opt: RR | None,
    limit: int,
    rel: tuple[bytes, ...],
    snap: Snapshot,
    zone: Zone,
    server_address: Address | None,
) -> Reply:
    qtype = query.q.qtype
    soa = _soa(zone, snap, zone.domain)
    if not rel:
        ns = RR(zone.domain + ".", QTYPE.NS, ttl=zone.ttl, rdata=NS(f"ns.{zone.domain}."))
        records = {QTYPE.SOA: [soa], QTYPE.NS: [ns], _ANY: [soa, ns]}.get(qtype, [])
        extra = _glue(snap, zone, server_address) if qtype in (QTYPE.NS, _ANY) else []
        return _build(
            query, opt, limit, auth=[] if records else [soa], answers=records, extra=extra
        )
    name = _text(b".".join(rel))
    node = snap.nodes.get(name)
    if node is None and name == "ns" and server_address is not None:
        node = Node((server_address,))
    if node is not None:
        return _answer(query, opt, limit, node, snap, zone, soa)
    if name in snap.names:
        return _build(query, opt, limit, auth=[soa])  # an empty non-terminal: NODATA
    return _build(query, opt, limit, RCODE.NXDOMAIN, auth=[soa])


def _answer(
    query: DNSRecord,
    opt: RR | None,
    limit: int,
    node: Node,
    snap: Snapshot,
    zone: Zone,
    soa: RR | None = None,
) -> Reply:
    """The node's records of the asked type, in every rotation; NODATA if none."""
    qtype, owner = query.q.qtype, query.q.qname
    ttl = zone.ttl if node.ttl is None else min(zone.ttl, node.ttl)
    v4 = [a for a in node.addresses if a.version == 4] if qtype in (QTYPE.A, _ANY) else []
    v6 = [a for a in node.addresses if a.version == 6] if qtype in (QTYPE.AAAA, _ANY) else []
    srv, extra = [], []
    if qtype in (QTYPE.SRV, _ANY):
        for s in node.srv:
            target = f"{s.target}.{zone.domain}."
            rdata = SRV(s.priority, s.weight, s.port, target)
            srv.append(RR(owner, QTYPE.SRV, ttl=ttl, rdata=rdata))
        # The targets' addresses in the additional section save the client a round trip.
        for target in dict.fromkeys(s.target for s in node.srv):
            held = snap.nodes.get(target)
            for a in held.addresses if held is not None else ():
                extra.append(_address_rr(f"{target}.{zone.domain}.", a, ttl))
    if not (v4 or v6 or srv):
        return _build(query, opt, limit, auth=[] if soa is None else [soa])
    count = min(max(len(v4), len(v6), 1), MAX_ROTATIONS)
    variants = []
    for k in range(count):
        turn4 = _rotated(v4, k * len(v4) // count)
        turn6 = _rotated(v6, k * len(v6) // count)
        variants.append([_address_rr(owner, a, ttl) for a in turn4 + turn6] + srv)
    return _build(query, opt, limit, answers=variants[0], extra=extra, more=variants[1:])


def _glue(snap: Snapshot, zone: Zone, server_address: Address | None) -> list[RR]:
    node = snap.nodes.get("ns")
    found = node.addresses if node is not None else (server_address,) if server_address else ()
    return [_address_rr(f"ns.{zone.domain}.", a, zone.ttl) for a in found]


def _soa(zone: Zone, snap: Snapshot, apex: str) -> RR:
    times = (snap.revision & 0xFFFFFFFF, 3600, 600, 86400, zone.ttl)
    rdata = SOA(f"ns.{zone.domain}.", f"hostmaster.{zone.domain}.", times)
    return RR(apex + ".", QTYPE.SOA, ttl=zone.ttl, rdata=rdata)


# -- reverse names ---------------------------------------------------------------


def _reverse(
    query: DNSRecord,
    opt: RR | None,
    limit: int,
    labels: tuple[bytes, ...],
    snap: Snapshot,
    zone: Zone,
) -> Reply | None:
    """PTR for our addresses; NXDOMAIN inside our blocks; None (forward) elsewhere."""
    address = _reverse_address(labels)
    if address is None:
        return None
    names = snap.ptr.get(address)
    block = next((b for b in snap.blocks if address in b), None)
    if names is None and block is None:
        return None
    soa = _soa(zone, snap, _reverse_zone(address, block.prefixlen if block else None))
    if names is None:
        return _build(query, opt, limit, RCODE.NXDOMAIN, auth=[soa])
    if query.q.qtype not in (QTYPE.PTR, _ANY):
        return _build(query, opt, limit, auth=[soa])
    owner = query.q.qname
    answers = [
        RR(owner, QTYPE.PTR, ttl=zone.ttl, rdata=PTR(f"{name}.{zone.domain}."))
        for name in _by_rank(names, snap)
    ]
    return _build(query, opt, limit, answers=answers)


def _by_rank(names: tuple[str, ...], snap: Snapshot) -> list[str]:
    """A container's own name first, then its aliases in its order (then by name):
    clients take the first PTR as the address's name (getent, ping, logs), and
    sorted, podman's short-ID alias (digits first) came before the container's."""

    def rank(name: str) -> tuple[int, str]:
        node = snap.nodes.get(name)
        return (0 if node is None else node.rank), name

    return sorted(names, key=rank)


def _reverse_address(labels: tuple[bytes, ...]) -> Address | None:
    """The address a full reverse name stands for, else None."""
    body = labels[:-2]
    try:
        if labels[-2:] == _REVERSE_V4 and len(body) == 4:
            if all(p.isdigit() and len(p) <= 3 and (p == b"0" or p[:1] != b"0") for p in body):
                return IPv4Address(".".join(p.decode() for p in reversed(body)))
        elif len(body) == 32 and all(len(p) == 1 and p[0] in _HEX for p in body):
            nibbles = b"".join(reversed(body)).decode()
            return IPv6Address(":".join(nibbles[i : i + 4] for i in range(0, 32, 4)))
    except ValueError:
        pass
    return None


def _reverse_zone(address: Address, prefix: int | None) -> str:
    """The reverse zone on the label boundary at or above ``prefix`` (the block's)."""
    labels = address.reverse_pointer.split(".")
    if address.version == 4:
        keep = (prefix if prefix is not None else 24) // 8
    else:
        keep = (prefix if prefix is not None else 64) // 4
    return ".".join(labels[len(labels) - 2 - keep :])


# -- packing -----------------------------------------------------------------------


def _build(
    query: DNSRecord,
    opt: RR | None,
    limit: int,
    rcode: int = RCODE.NOERROR,
    *,
    answers: list[RR] | None = None,
    auth: list[RR] | None = None,
    extra: list[RR] | None = None,
    more: list[list[RR]] | None = None,
) -> Reply:
    """Pack the reply (and its other rotations); TC and empty if it exceeds ``limit``."""
    tail = list(extra or [])
    if opt is not None:
        tail.append(EDNS0(udp_len=OUR_PAYLOAD, ext_rcode=rcode >> 4))
    variants = []
    for records in [answers or [], *(more or [])]:
        header = _header(query, rcode)
        packed = DNSRecord(header, [query.q], list(records), auth=list(auth or []), ar=tail).pack()
        if len(packed) > limit:
            header = _header(query, rcode, tc=True)
            ar = [] if opt is None else tail[-1:]
            return Reply((DNSRecord(header, [query.q], [], ar=ar).pack(),), rcode, query.q.qtype)
        variants.append(packed)
    return Reply(tuple(variants), rcode, query.q.qtype)


def _header(query: DNSRecord, rcode: int, tc: bool = False) -> DNSHeader:
    # AA on every answer we make ourselves: we are the authority for what we answer.
    h = query.header
    return DNSHeader(id=h.id, qr=1, opcode=0, aa=1, tc=int(tc), rd=h.rd, ra=1, rcode=rcode & 0xF)


def _header_only(wire: bytes, rcode: int) -> Reply:
    """A reply with no sections, for a query we cannot or will not read."""
    flags = bytes((0x80 | (wire[2] & 0x79), 0x80 | rcode))  # QR, opcode and RD echoed; RA
    return Reply((wire[:2] + flags + bytes(8),), rcode, None, cacheable=False)


def formerr(wire: bytes) -> bytes:
    """FORMERR for a query that could not be read whole (at least a header)."""
    return _header_only(wire, RCODE.FORMERR).wire


def servfail(fwd: Forward) -> bytes:
    """SERVFAIL for a forwarded query whose upstreams all failed."""
    flags = bytes((0x80 | (fwd.wire[2] & 0x01), 0x80 | RCODE.SERVFAIL))
    return fwd.wire[:2] + flags + b"\x00\x01" + bytes(6) + fwd.question


def fit(answer: bytes, fwd: Forward) -> bytes:
    """An upstream's ``answer`` as the client may receive it: whole, or header and
    question with TC set when it exceeds the client's limit."""
    if len(answer) <= fwd.limit:
        return answer
    return answer[:2] + bytes((answer[2] | 0x02, answer[3])) + b"\x00\x01" + bytes(6) + fwd.question


def _address_rr(owner: str | DNSLabel, address: Address, ttl: int) -> RR:
    if address.version == 4:
        return RR(owner, QTYPE.A, ttl=ttl, rdata=A(str(address)))
    return RR(owner, QTYPE.AAAA, ttl=ttl, rdata=AAAA(str(address)))


def _rotated(items: list, k: int) -> list:
    return items[k:] + items[:k] if items else items


def _sane(name: DNSLabel) -> bool:
    """RFC 1035 limits that dnslib does not enforce: labels of 63, names of 255 octets."""
    return all(0 < len(label) <= 63 for label in name.label) and (
        sum(len(label) + 1 for label in name.label) + 1 <= 255
    )


def _text(name: bytes) -> str:
    # Labels are bytes; one that is not ASCII cannot match a registered name.
    return name.decode("ascii", "replace")


def _question_end(wire: bytes) -> int:
    """Offset past the first question (the query has been parsed, so it is there)."""
    pos = 12
    while True:
        length = wire[pos]
        if length & 0xC0 == 0xC0:
            pos += 2
            break
        pos += 1 + length
        if length == 0:
            break
    return pos + 4
