"""The asyncio server in-process on loopback: cache, snapshot swaps, listeners, forwarding."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator

import pytest
from dns_testing import (
    ZONE,
    attachment,
    query,
    rdata,
    registration,
    tcp_ask,
    udp_ask,
)
from dnslib import DNSRecord

from netplug.dns import server as server_module
from netplug.dns.registry import Snapshot
from netplug.dns.server import DNSServer, Listener, Scope
from netplug.dns.upstream import Upstream

from fake_upstream import fake_upstream

SNAP = Snapshot.build(
    [
        attachment("blue", "h1", "c1", ["web"], ["10.244.1.5"]),
        registration("api", {"addresses": ["10.1.2.3", "10.1.2.4"]}),
        registration("many", {"addresses": [f"10.9.0.{i}" for i in range(1, 41)]}),
    ],
    3,
)


def _sample(server: DNSServer, name: str, **labels: str) -> float | None:
    return server.metrics.registry.get_sample_value(name, labels)


@pytest.fixture
async def server() -> AsyncIterator[DNSServer]:
    s = DNSServer(ZONE, Upstream([]), snapshot=SNAP)
    try:
        yield s
    finally:
        await s.close()


async def test_udp_and_tcp(server: DNSServer) -> None:
    bound = await server.add_listener(Listener("127.0.0.1", 0))
    assert bound.port != 0 and server.listeners == [bound]
    for ask in (udp_ask, tcp_ask):
        reply = DNSRecord.parse(await ask(bound.port, query("web.blue.netplug.internal")))
        assert rdata(reply) == ["10.244.1.5"]


async def test_cache_hit_patches_the_id_and_rotates(server: DNSServer) -> None:
    bound = await server.add_listener(Listener("127.0.0.1", 0))
    first = DNSRecord.parse(await udp_ask(bound.port, query("api.netplug.internal", qid=1)))
    second = DNSRecord.parse(await udp_ask(bound.port, query("api.netplug.internal", qid=2)))
    third = DNSRecord.parse(await udp_ask(bound.port, query("api.netplug.internal", qid=3)))
    assert [r.header.id for r in (first, second, third)] == [1, 2, 3]
    assert rdata(first) == ["10.1.2.3", "10.1.2.4"]
    assert rdata(second) == ["10.1.2.4", "10.1.2.3"]
    assert rdata(third) == rdata(first)
    assert _sample(server, "netplug_dns_cache_hits_total") == 2
    assert _sample(server, "netplug_dns_cache_misses_total") == 1
    assert _sample(server, "netplug_dns_queries_total", type="A", rcode="NOERROR") == 3
    assert _sample(server, "netplug_dns_cache_entries") == 1
    assert _sample(server, "netplug_dns_registry_names") == 3


async def test_update_invalidates(server: DNSServer) -> None:
    bound = await server.add_listener(Listener("127.0.0.1", 0))
    wire = query("new.netplug.internal")
    assert DNSRecord.parse(await udp_ask(bound.port, wire)).header.rcode == 3
    server.update(SNAP.apply([]))  # the same snapshot: the cache stays
    assert len(server.cache) == 1
    from netplug.ipam.store.base import Event

    kv = registration("new", {"addresses": ["10.1.2.9"]})
    server.update(SNAP.apply([Event("put", kv)]))
    assert len(server.cache) == 0
    assert rdata(DNSRecord.parse(await udp_ask(bound.port, wire))) == ["10.1.2.9"]


async def test_listeners_change_at_runtime(server: DNSServer) -> None:
    plain = await server.add_listener(Listener("127.0.0.1", 0))
    blue = await server.add_listener(Listener("127.0.0.1", 0, "blue"))
    bare = query("web")
    assert rdata(DNSRecord.parse(await udp_ask(blue.port, bare))) == ["10.244.1.5"]
    # The plain listener has no network: "web" goes upstream, and there is none.
    assert DNSRecord.parse(await udp_ask(plain.port, bare)).header.rcode == 2
    await server.remove_listener(blue)
    assert server.listeners == [plain]
    with pytest.raises((ConnectionError, TimeoutError)):
        await udp_ask(blue.port, bare, timeout=0.5)
    kept = await server.set_listeners([plain, Listener("127.0.0.1", 0, "red")])
    assert plain in kept and len(kept) == 2
    await server.set_listeners([])
    assert server.listeners == []


async def test_tcp_gets_what_udp_truncates(server: DNSServer) -> None:
    bound = await server.add_listener(Listener("127.0.0.1", 0))
    wire = query("many.netplug.internal")
    udp = DNSRecord.parse(await udp_ask(bound.port, wire))
    assert udp.header.tc and not udp.rr
    tcp = DNSRecord.parse(await tcp_ask(bound.port, wire))
    assert not tcp.header.tc and len(tcp.rr) == 40


async def test_forwarding() -> None:
    with fake_upstream() as up:
        server = DNSServer(ZONE, Upstream([("127.0.0.1", up.port)], budget=0.5), snapshot=SNAP)
        try:
            bound = await server.add_listener(Listener("127.0.0.1", 0))
            ok = DNSRecord.parse(await udp_ask(bound.port, query("WWW.example", qid=77)))
            assert ok.header.id == 77 and rdata(ok) == ["192.0.2.10"]
            nx = DNSRecord.parse(await udp_ask(bound.port, query("nope.example")))
            assert nx.header.rcode == 3
            # Upstream truncates over UDP; we ask it over TCP, then fit the client's limit.
            big = DNSRecord.parse(await udp_ask(bound.port, query("big.example")))
            assert big.header.tc and str(big.q.qname) == "big.example."
            assert up.tcp >= 1
            big_edns = DNSRecord.parse(await udp_ask(bound.port, query("big.example", edns=4096)))
            assert len(big_edns.rr) == 60
            big_tcp = DNSRecord.parse(await tcp_ask(bound.port, query("big.example")))
            assert len(big_tcp.rr) == 60
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            silent = DNSRecord.parse(await udp_ask(bound.port, query("silent.example"), timeout=3))
            assert silent.header.rcode == 2 and loop.time() - t0 < 2.5  # 1 s budget + slack
            text = server.metrics.exposition().decode()
            assert 'netplug_dns_forward_requests_total{outcome="tcp"}' in text
        finally:
            await server.close()


async def test_dead_upstream_servfail_fast() -> None:
    server = DNSServer(ZONE, Upstream([("127.0.0.1", 9)], budget=1.0), snapshot=SNAP)
    try:
        reply = DNSRecord.parse(await server.answer(query("www.example"), Scope(None, False, None)))
        assert reply.header.rcode == 2
    finally:
        await server.close()


async def test_garbage_never_stops_it(server: DNSServer) -> None:
    bound = await server.add_listener(Listener("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", bound.port)
    )
    try:
        for junk in (
            b"",
            b"\x00",
            b"\xff" * 12,
            b"\x00\x01\x01\x00\x00\x01" + b"\x00" * 6 + b"\xc0\x0c",
            bytes(range(256)) * 4,
        ):
            transport.sendto(junk)
    finally:
        transport.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", bound.port)
    writer.write(b"\x00\x05hello")  # a TCP message that is no query: the connection closes
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    assert rdata(
        DNSRecord.parse(await udp_ask(bound.port, query("web.blue.netplug.internal")))
    ) == ["10.244.1.5"]
    assert _sample(server, "netplug_dns_malformed_requests_total") >= 3


def test_port0_picks_again_when_tcp_has_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel picks a free UDP port; TCP may have that one in use (CI saw it)."""
    real = server_module._bound_socket
    refused: list[int] = []

    def tcp_busy_once(family: int, kind: int, host: str, port: int, *rest) -> socket.socket:
        if kind == socket.SOCK_STREAM and not refused:
            refused.append(port)
            raise OSError(errno.EADDRINUSE, "Address already in use")
        return real(family, kind, host, port, *rest)

    monkeypatch.setattr(server_module, "_bound_socket", tcp_busy_once)
    udp, tcp = server_module._bound_pair(socket.AF_INET, "127.0.0.1", 0)
    try:
        assert udp.getsockname()[1] == tcp.getsockname()[1]
        assert refused and refused[0] != 0
    finally:
        udp.close()
        tcp.close()


def test_fixed_port_in_use_is_an_error() -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(OSError) as raised:
            server_module._bound_pair(socket.AF_INET, "127.0.0.1", holder.getsockname()[1])
        assert raised.value.errno == errno.EADDRINUSE
    finally:
        holder.close()


async def test_without_freebind_an_address_on_no_interface_is_an_error() -> None:
    """netplug-dns's own listeners: a mistyped --listen address used to bind (FREEBIND,
    for netplugd's gateways) and the server said "ready" while nothing could reach it."""
    server = DNSServer(ZONE, Upstream([]), snapshot=SNAP, freebind=False)
    try:
        with pytest.raises(OSError) as raised:
            await server.add_listener(Listener("192.0.2.77", 0))  # TEST-NET-1: nowhere here
        assert raised.value.errno == errno.EADDRNOTAVAIL
        assert server.listeners == []
    finally:
        await server.close()
