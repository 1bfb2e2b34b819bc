"""A real ``netplug-dns`` on loopback for the integration tests, with a fake upstream.

``running_dns`` starts it on ports the kernel picks, with a few names in its
store, and kills it by its PID when the block ends. No namespaces, no root.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dnslib import QTYPE, RR, A, DNSRecord

from netplug.ipam.store.sqlite import SQLiteStore

BIN = Path(sys.executable).parent / "netplug-dns"
TOKEN = "t0ken"


def wait_until(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# -- a fake upstream resolver (UDP and TCP on one loopback port) -----------------


class FakeUpstream:
    """www.example. -> 192.0.2.10; big.example. -> 60 A (TC over plain UDP); else NXDOMAIN."""

    def __init__(self) -> None:
        self.tcp_queries = 0
        self._stop = threading.Event()

    def _reply(self, data: bytes, tcp: bool) -> bytes:
        q = DNSRecord.parse(data)
        name = str(q.q.qname).lower()
        r = q.reply()
        answers = {
            "www.example.": ["192.0.2.10"],
            "big.example.": [f"192.0.2.{i}" for i in range(1, 61)],
        }
        for a in answers.get(name, []):
            r.add_answer(RR(q.q.qname, QTYPE.A, ttl=60, rdata=A(a)))
        if name not in answers:
            r.header.rcode = 3
        wire = bytes(r.pack())
        opt = [rr for rr in q.ar if rr.rtype == QTYPE.OPT]
        if not tcp and len(wire) > (max(512, opt[0].rclass) if opt else 512):
            r.rr, r.header.tc = [], 1
            wire = bytes(r.pack())
        return wire

    def __enter__(self) -> FakeUpstream:
        for _ in range(20):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self.tcp.bind(("127.0.0.1", self.udp.getsockname()[1]))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        self.port = self.udp.getsockname()[1]
        self.tcp.listen(8)
        self.udp.settimeout(0.05)
        self.tcp.settimeout(0.05)
        self.threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(2)
        self.udp.close()
        self.tcp.close()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.udp.recvfrom(65535)
                self.udp.sendto(self._reply(data, tcp=False), addr)
            except Exception:  # a fake: whatever it is sent, keep serving
                continue

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    size = int.from_bytes(conn.recv(2), "big")
                    data = b""
                    while len(data) < size:
                        chunk = conn.recv(size - len(data))
                        if not chunk:
                            break
                        data += chunk
                    self.tcp_queries += 1
                    out = self._reply(data, tcp=True)
                    conn.sendall(len(out).to_bytes(2, "big") + out)
                except OSError:
                    continue


# -- the server ------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen
    dns_port: int
    blue_port: int
    http_port: int
    store: SQLiteStore
    log: Path
    upstream: FakeUpstream

    def dig(self, *args: str, port: int | None = None) -> str:
        cmd = ["dig", "@127.0.0.1", "-p", str(port or self.dns_port), "+time=2", "+tries=1", *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
        return out.stdout

    def short(self, *args: str, port: int | None = None) -> list[str]:
        return sorted(self.dig("+short", *args, port=port).split())

    def http(
        self, method: str, path: str, body: dict | None = None, token: str | None = TOKEN
    ) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method
        )
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                raw = r.read()
                return r.status, json.loads(
                    raw
                ) if raw and r.headers.get_content_type() == "application/json" else {
                    "text": raw.decode()
                }
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def raw_http(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        length: int | None = None,
        timeout: float = 5,
    ) -> tuple[int, dict]:
        """One request on a raw socket, for bodies no client library sends: ``body``
        as is, announced as ``length`` bytes (default: its size). The status and
        the JSON answer; each read waits at most ``timeout``."""
        size = len(body) if length is None else length
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: {size}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=timeout) as sock:
            sock.sendall(head.encode() + body)
            with sock.makefile("rb") as reply:
                status = int(reply.readline().split()[1])
                headers = {}
                while line := reply.readline().strip():
                    name, _, value = line.decode().partition(":")
                    headers[name.lower()] = value.strip()
                data = reply.read(int(headers.get("content-length", 0)))
        return status, json.loads(data) if data else {}


def attachment(store: SQLiteStore, network: str, cid: str, name: str, address: str) -> str:
    key = f"/netplug/attachments/{network}/h1/{cid}/eth0"
    record = {
        "containerID": cid,
        "ifname": "eth0",
        "ips": [{"address": f"{address}/24", "gateway": "10.244.1.1", "block": "10.244.1.0/24"}],
        "names": [name],
    }
    store.put(key, json.dumps(record).encode())
    return key


@contextmanager
def running_dns(tmp: Path) -> Iterator[Server]:
    """netplug-dns with its store in ``tmp``: ``web.blue`` (10.244.1.5), the block
    10.244.1.0/24 of blue, and the API name ``many`` with 40 addresses."""
    store = SQLiteStore(str(tmp / "netplug.db"))
    attachment(store, "blue", "c1", "web", "10.244.1.5")
    store.put("/netplug/blocks/blue/10.244.1.0/24", b'{"host":"h1"}')
    many = {"addresses": [f"10.9.0.{i}" for i in range(1, 41)]}
    store.put("/netplug/dns/many", json.dumps(many).encode())
    log = tmp / "netplug-dns.log"
    with FakeUpstream() as upstream, open(log, "w") as log_file:
        proc = subprocess.Popen(
            [
                str(BIN),
                "--store",
                f"sqlite://{tmp / 'netplug.db'}",
                "--listen",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0@blue",
                "--http",
                "127.0.0.1:0",
                "--upstream",
                f"127.0.0.1:{upstream.port}",
                "--token",
                TOKEN,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        try:

            def started() -> str:
                text = log.read_text()
                return text if "ready" in text or proc.poll() is not None else ""

            text = wait_until(started, timeout=15, what="netplug-dns to start")
            assert proc.poll() is None, text
            ports = re.findall(r"dns listening on 127\.0\.0\.1:(\d+)(@blue)?", text)
            plain = next(int(p) for p, net in ports if not net)
            blue = next(int(p) for p, net in ports if net)
            http = int(re.search(r"http listening on 127\.0\.0\.1:(\d+)", text).group(1))
            yield Server(proc, plain, blue, http, store, log, upstream)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            store.close()
