"""Helpers for the DNS tests: store records, queries, and a fake upstream resolver."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dnslib import EDNS0, QTYPE, RR, A, DNSRecord

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


class FakeUpstream:
    """A resolver on 127.0.0.1 (UDP and TCP on one port) in a thread.

    ``NAME.example.`` answers from ``answers``; ``silent.example.`` never
    answers; ``big.example.`` answers 60 A records (TC over UDP without EDNS);
    anything else is NXDOMAIN. ``udp``/``tcp`` count the queries received.
    """

    def __init__(self) -> None:
        self.answers = {
            "www.example.": ["192.0.2.10"],
            "big.example.": [f"192.0.2.{i}" for i in range(1, 61)],
        }
        self.udp = self.tcp = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.port = 0

    def reply(self, data: bytes, tcp: bool) -> bytes | None:
        q = DNSRecord.parse(data)
        name = str(q.q.qname).lower()
        if name == "silent.example.":
            return None
        r = q.reply()
        if name in self.answers:
            for a in self.answers[name]:
                r.add_answer(RR(q.q.qname, QTYPE.A, ttl=60, rdata=A(a)))
        else:
            r.header.rcode = 3
        wire = r.pack()
        opt = [rr for rr in q.ar if rr.rtype == QTYPE.OPT]
        limit = 65535 if tcp else max(512, opt[0].rclass) if opt else 512
        if len(wire) > limit:
            r.rr = []
            r.header.tc = 1
            wire = r.pack()
        return bytes(wire)

    def __enter__(self) -> FakeUpstream:
        for _ in range(20):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind(("127.0.0.1", 0))
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                t.bind(("127.0.0.1", u.getsockname()[1]))
                break
            except OSError:
                u.close()
                t.close()
        else:
            raise RuntimeError("no free port for the fake upstream")
        t.listen(16)
        u.settimeout(0.05)
        t.settimeout(0.05)
        self.port = u.getsockname()[1]
        self._sockets = (u, t)
        self._threads = [
            threading.Thread(target=self._serve_udp, args=(u,), daemon=True),
            threading.Thread(target=self._serve_tcp, args=(t,), daemon=True),
        ]
        for th in self._threads:
            th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(2)
        for s in self._sockets:
            s.close()

    def _serve_udp(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.udp += 1
            out = self.reply(data, tcp=False)
            if out is not None:
                sock.sendto(out, addr)

    def _serve_tcp(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    size = int.from_bytes(_read(conn, 2), "big")
                    data = _read(conn, size)
                except (OSError, EOFError):
                    continue
                self.tcp += 1
                out = self.reply(data, tcp=True)
                if out is not None:
                    conn.sendall(len(out).to_bytes(2, "big") + out)


def _read(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


@contextmanager
def fake_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up
