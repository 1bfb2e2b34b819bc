"""Helpers for the DNS tests: store records and queries (the fake upstream resolver:
``tests/fake_upstream.py``, shared with the integration tests)."""

from __future__ import annotations

import asyncio
import json

from dnslib import EDNS0, DNSRecord

from netplug.dns.registry import Snapshot
from netplug.dns.resolve import Forward, Reply, Zone, resolve
from netplug.ipam.store.base import KeyValue

ZONE = Zone("netplug.internal", ttl=5)


def attachment(
    network: str, host: str, cid: str, names: list[str], addresses: list[str], ifname: str = "eth0"
) -> KeyValue:
    record = {
        "containerID": cid,
        "ifname": ifname,
        "ips": [
            {
                "address": f"{a}/{64 if ':' in a else 24}",
                "gateway": "10.0.0.1",
                "block": "10.0.0.0/24",
            }
            for a in addresses
        ],
        "names": names,
        "netns": f"/run/netns/{cid}",
    }
    key = f"/netplug/attachments/{network}/{host}/{cid}/{ifname}"
    return KeyValue(key, json.dumps(record).encode(), 1, 1, 1)


def registration(name: str, body: dict) -> KeyValue:
    return KeyValue(f"/netplug/dns/{name}", json.dumps(body).encode(), 1, 1, 1)


def block(network: str, cidr: str) -> KeyValue:
    return KeyValue(f"/netplug/blocks/{network}/{cidr}", b'{"host":"h1"}', 1, 1, 1)


def query(name: str, qtype: str = "A", *, edns: int | None = None, qid: int = 0x1234) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = qid
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    return bytes(q.pack())


def ask(
    snap: Snapshot,
    name: str,
    qtype: str = "A",
    *,
    network: str | None = None,
    edns: int | None = None,
    tcp: bool = False,
    server_address=None,
    zone: Zone = ZONE,
) -> DNSRecord | Forward:
    """Resolve and parse: the reply as a DNSRecord, or the Forward decision."""
    out = resolve(
        query(name, qtype, edns=edns), snap, zone, network, tcp=tcp, server_address=server_address
    )
    if isinstance(out, Reply):
        return DNSRecord.parse(out.wire)
    assert isinstance(out, Forward), out
    return out


def rdata(reply: DNSRecord, section: str = "rr") -> list[str]:
    return [str(rr.rdata) for rr in getattr(reply, section)]


async def udp_ask(port: int, wire: bytes, timeout: float = 2.0, host: str = "127.0.0.1") -> bytes:
    """One UDP query to host:port; the first datagram back."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            if not got.done():
                got.set_result(data)

        def error_received(self, exc: Exception) -> None:
            if not got.done():
                got.set_exception(exc)

    transport, _ = await loop.create_datagram_endpoint(Proto, remote_addr=(host, port))
    try:
        transport.sendto(wire)
        return await asyncio.wait_for(got, timeout)
    finally:
        transport.close()


async def tcp_ask(port: int, wire: bytes, timeout: float = 2.0) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(len(wire).to_bytes(2, "big") + wire)
        size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), timeout), "big")
        return await asyncio.wait_for(reader.readexactly(size), timeout)
    finally:
        writer.close()
