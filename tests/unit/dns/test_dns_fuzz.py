"""Fuzz the parser and resolver: mutated queries never raise, and every reply parses.

Bounded in count and time, seeded so that a failure reproduces.
"""

from __future__ import annotations

import random
import time

from dns_testing import ZONE, attachment, block, query, registration
from dnslib import DNSRecord

from netplug.dns.registry import Snapshot
from netplug.dns.resolve import Forward, Reply, resolve
from netplug.dns.server import DNSServer, Scope

SNAP = Snapshot.build(
    [
        attachment("blue", "h1", "c1", ["web"], ["10.244.1.5", "fd00::5"]),
        block("blue", "10.244.1.0/24"),
        registration(
            "api", {"addresses": ["10.1.2.3"], "srv": [{"service": "_http._tcp", "port": 80}]}
        ),
    ],
    1,
)
SEEDS = [
    query("web.blue.netplug.internal"),
    query("web.blue.netplug.internal", "AAAA", edns=1232),
    query("_http._tcp.api.netplug.internal", "SRV"),
    query("5.1.244.10.in-addr.arpa", "PTR"),
    query("netplug.internal", "SOA", edns=4096),
    query("web"),
    query("example.com", "MX"),
]
ITERATIONS = 4000
BUDGET = 5.0  # seconds


def mutate(rng: random.Random, wire: bytes) -> bytes:
    data = bytearray(wire)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(data)) if data else 0
        if op == 0 and data:
            data[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[pos] = rng.randrange(256)
        elif op == 2:
            del data[pos:]
        elif op == 3:
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 4 and len(data) >= 12:
            field = rng.choice((4, 6, 8, 10))  # section counts
            data[field : field + 2] = rng.randrange(65536).to_bytes(2, "big")
        elif op == 5 and len(data) > 14:
            data[pos] = 0xC0 | rng.randrange(64)  # compression pointers
    return bytes(data)


def test_mutated_queries() -> None:
    rng = random.Random(1234)
    deadline = time.monotonic() + BUDGET
    outcomes = {"reply": 0, "forward": 0, "drop": 0}
    for i in range(ITERATIONS):
        if time.monotonic() > deadline:
            break
        wire = mutate(rng, rng.choice(SEEDS)) if i % 10 else rng.randbytes(rng.randint(0, 600))
        out = resolve(wire, SNAP, ZONE, rng.choice((None, "blue")), tcp=bool(i % 2))
        if isinstance(out, Reply):
            outcomes["reply"] += 1
            for variant in out.variants:
                reply = DNSRecord.parse(variant)
                assert reply.header.qr and variant[:2] == wire[:2]
        elif isinstance(out, Forward):
            outcomes["forward"] += 1
            assert 512 <= out.limit <= 65535 and out.question_end <= len(wire)
        else:
            assert out is None
            outcomes["drop"] += 1
    assert all(outcomes.values()), outcomes


async def test_server_path_survives_mutations() -> None:
    server = DNSServer(ZONE, None, snapshot=SNAP)
    rng = random.Random(99)
    scope = Scope("blue", False, None)
    deadline = time.monotonic() + BUDGET / 2
    for _ in range(1500):
        if time.monotonic() > deadline:
            break
        wire = mutate(rng, rng.choice(SEEDS))
        out = await server.answer(wire, scope)
        assert out is None or DNSRecord.parse(out).header.qr
    good = await server.answer(query("web.blue.netplug.internal", qid=5), scope)
    assert DNSRecord.parse(good).header.id == 5
    await server.close()
