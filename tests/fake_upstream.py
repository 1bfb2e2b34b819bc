"""A fake upstream DNS resolver on loopback, for the DNS unit tests and the
integration tests of ``netplug-dns`` alike (never anything outside the machine)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dnslib import QTYPE, RR, A, DNSRecord


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
