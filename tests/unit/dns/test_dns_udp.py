"""UDP listeners: batches of datagrams (recvmmsg/sendmmsg) on a thread each."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import AsyncIterator

import pytest
from dns_testing import ZONE, query, rdata, registration, udp_ask
from dnslib import QTYPE, DNSRecord
from prometheus_client.values import MutexValue

from netplug.dns import udp as udp_module
from netplug.dns.metrics import tag
from netplug.dns.mmsg import LEN, STRIDE, Batch
from netplug.dns.registry import Snapshot
from netplug.dns.server import DNSServer, Listener
from netplug.dns.upstream import Upstream

from fake_upstream import fake_upstream

SNAP = Snapshot.build(
    [
        registration("api", {"addresses": ["10.1.2.3"]}),
        registration("many", {"addresses": [f"10.9.0.{i}" for i in range(1, 41)]}),
    ],
    3,
)


@contextlib.asynccontextmanager
async def listening(upstreams: list[tuple[str, int]], host: str = "127.0.0.1"):
    """A server with SNAP, listening on ``host`` (a port the kernel picks)."""
    server = DNSServer(ZONE, Upstream(upstreams, budget=1.0), snapshot=SNAP)
    try:
        yield server, await server.add_listener(Listener(host, 0))
    finally:
        await server.close()


@pytest.fixture
async def served() -> AsyncIterator[tuple[DNSServer, Listener]]:
    async with listening([]) as pair:
        yield pair


def _count(server: DNSServer, name: str, **labels: str) -> float | None:
    return server.metrics.registry.get_sample_value(name, labels)


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
def test_a_batch_reads_several_and_answers_each_sender(family: int, host: str) -> None:
    server = socket.socket(family, socket.SOCK_DGRAM)
    clients = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        server.bind((host, 0))
        for i, client in enumerate(clients):
            client.bind((host, 0))
            client.sendto(b"q%d" % i, server.getsockname())
        batch = Batch(family, size=8, slot=64)
        assert batch.receive(server.fileno()) == 3  # all three were queued
        for i, client in enumerate(clients):
            at = i * batch.slot
            assert bytes(batch.view[at : at + batch.received[i * STRIDE + LEN]]) == b"q%d" % i
            assert batch.address(i)[:2] == client.getsockname()[:2]
            batch.view[at : at + 6] = b"reply%d" % i
            batch.lengths[2 * i + 1] = 6
        batch.send(server.fileno(), 0, 3)
        for i, client in enumerate(clients):
            client.settimeout(2)
            assert client.recv(64) == b"reply%d" % i
    finally:
        server.close()
        for client in clients:
            client.close()


async def test_cache_hits_pay_no_prometheus_update(
    served: tuple[DNSServer, Listener], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The regression: each hit used to update a labelled counter, the hit counter
    and a histogram (prometheus_client, a lock each), over half of its cost."""
    server, bound = served
    wire = query("api.netplug.internal")
    await udp_ask(bound.port, wire)  # the miss that fills the cache
    updates = []
    real = MutexValue.inc
    monkeypatch.setattr(MutexValue, "inc", lambda self, n: updates.append(n) or real(self, n))
    for _ in range(20):
        assert rdata(DNSRecord.parse(await udp_ask(bound.port, wire))) == ["10.1.2.3"]
    assert updates == []
    assert _count(server, "netplug_dns_cache_hits_total") == 20
    assert _count(server, "netplug_dns_queries_total", type="A", rcode="NOERROR") == 21


async def test_counts_outlive_the_listener(served: tuple[DNSServer, Listener]) -> None:
    server, bound = served
    for _ in range(3):
        await udp_ask(bound.port, query("nope.netplug.internal"))
    await server.remove_listener(bound)
    assert _count(server, "netplug_dns_queries_total", type="A", rcode="NXDOMAIN") == 3
    assert _count(server, "netplug_dns_request_duration_seconds_count", transport="udp") == 3


async def test_a_reply_larger_than_its_slot_goes_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(udp_module, "Batch", functools.partial(Batch, slot=128))
    async with listening([]) as (server, bound):
        await _large_then_small(server, bound)


async def _large_then_small(server: DNSServer, bound: Listener) -> None:
    wire = query("many.netplug.internal", edns=4096)  # 40 addresses: over 128 bytes
    for qid in (1, 2):  # the miss, then the hit: both too large for the slot
        reply = DNSRecord.parse(await udp_ask(bound.port, bytes((0, qid)) + wire[2:]))
        assert reply.header.id == qid and len(reply.rr) == 40
    small = DNSRecord.parse(await udp_ask(bound.port, query("api.netplug.internal")))
    assert rdata(small) == ["10.1.2.3"]
    assert server.metrics.total().hits[tag(QTYPE.A, 0)] == 1


async def test_ipv6_listener_forwards_and_answers() -> None:
    with fake_upstream() as up:
        async with listening([("127.0.0.1", up.port)], "::1") as (_, bound):
            ask = functools.partial(udp_ask, bound.port, host="::1")
            assert rdata(DNSRecord.parse(await ask(query("WWW.example")))) == ["192.0.2.10"]
            assert rdata(DNSRecord.parse(await ask(query("api.netplug.internal")))) == ["10.1.2.3"]


async def test_stop_wakes_the_thread_at_once(served: tuple[DNSServer, Listener]) -> None:
    server, bound = served
    thread = server._listeners[bound].udp._thread
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await server.remove_listener(bound)
    assert not thread.is_alive() and loop.time() - t0 < 1


async def test_a_datagram_longer_than_its_slot_gets_formerr(
    served: tuple[DNSServer, Listener],
) -> None:
    server, bound = served
    wire = query("api.netplug.internal", qid=0x4242)
    reply = DNSRecord.parse(await udp_ask(bound.port, wire + bytes(5000)))
    assert reply.header.id == 0x4242 and reply.header.rcode == 1  # FORMERR
    assert _count(server, "netplug_dns_malformed_requests_total") == 1
    assert rdata(DNSRecord.parse(await udp_ask(bound.port, wire))) == ["10.1.2.3"]


async def test_a_gateway_not_yet_on_any_interface_binds_and_stops() -> None:
    """netplugd listens on a block's gateway before the bridge has the address
    (FREEBIND); its thread must start and stop like any other. Nothing is sent."""
    server = DNSServer(ZONE, Upstream([]), snapshot=SNAP)
    try:
        absent = Listener("192.0.2.77", 0, "blue")  # TEST-NET-1: on no interface here
        [bound] = await server.set_listeners([absent])
        thread = server._listeners[bound].udp._thread
        assert thread.is_alive()
        assert await server.set_listeners([]) == [] and not thread.is_alive()
    finally:
        await server.close()
