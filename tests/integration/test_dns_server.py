"""The real ``netplug-dns`` on loopback, asked by real ``dig``, with a fake upstream.

Everything listens on 127.0.0.1 with ports the kernel picks; the server's
process is killed by its PID in ``finally``. No namespaces, no root.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from netplug.ipam.store.sqlite import SQLiteStore

BIN = Path(sys.executable).parent / "netplug-dns"
TOKEN = "t0ken"
DOMAIN = "netplug.internal"

pytestmark = pytest.mark.skipif(
    shutil.which("dig") is None and os.environ.get("CI") != "true", reason="needs dig (dnsutils)"
)


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


def _attachment(store: SQLiteStore, network: str, cid: str, name: str, address: str) -> str:
    key = f"/netplug/attachments/{network}/h1/{cid}/eth0"
    record = {
        "containerID": cid,
        "ifname": "eth0",
        "ips": [{"address": f"{address}/24", "gateway": "10.244.1.1", "block": "10.244.1.0/24"}],
        "names": [name],
    }
    store.put(key, json.dumps(record).encode())
    return key


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("netplug-dns")
    store = SQLiteStore(str(tmp / "netplug.db"))
    _attachment(store, "blue", "c1", "web", "10.244.1.5")
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


# -- the tests -----------------------------------------------------------------------


def test_a_aaaa_and_bare_names(server: Server) -> None:
    assert server.short("web.blue.netplug.internal") == ["10.244.1.5"]
    assert server.short("WEB.Blue.NETPLUG.internal", "+tcp") == ["10.244.1.5"]
    assert server.short("web", port=server.blue_port) == ["10.244.1.5"]  # a client of blue
    assert server.short("web.blue.netplug.internal", "AAAA") == []
    status, _ = server.http("PUT", "/v1/names/dual", {"addresses": ["10.1.2.7", "fd00::7"]})
    assert status == 200
    wait_until(lambda: server.short("dual.netplug.internal", "AAAA") == ["fd00::7"], 3, "AAAA")


def test_ptr(server: Server) -> None:
    assert server.short("-x", "10.244.1.5") == ["web.blue.netplug.internal."]
    out = server.dig("-x", "10.244.1.77")
    assert "status: NXDOMAIN" in out and "1.244.10.in-addr.arpa." in out


def test_soa_and_nxdomain(server: Server) -> None:
    soa = server.dig("+short", "netplug.internal", "SOA")
    assert soa.startswith("ns.netplug.internal. hostmaster.netplug.internal. ")
    assert server.short("netplug.internal", "NS") == ["ns.netplug.internal."]
    out = server.dig("nope.blue.netplug.internal")
    assert "status: NXDOMAIN" in out
    authority = out.split(";; AUTHORITY SECTION:")[1]
    assert re.search(r"netplug\.internal\.\s+\d+\s+IN\s+SOA\s+ns\.netplug\.internal\.", authority)
    assert "flags: qr aa rd ra" in out


def test_forwarding(server: Server) -> None:
    assert server.short("www.example") == ["192.0.2.10"]
    assert server.short("www.example", "+tcp") == ["192.0.2.10"]
    assert "status: NXDOMAIN" in server.dig("nothing.example")


def test_truncation_then_tcp(server: Server) -> None:
    # Without EDNS 40 A records do not fit 512 bytes: TC, and dig retries over TCP.
    truncated = server.dig("+noedns", "+ignore", "many.netplug.internal")
    assert re.search(r"flags: qr aa tc", truncated) and "ANSWER: 0" in truncated
    assert len(server.short("+noedns", "many.netplug.internal")) == 40
    assert len(server.short("+bufsize=4096", "many.netplug.internal")) == 40
    assert len(server.short("+bufsize=4096", "big.example")) == 60  # fits the client's EDNS size
    # Without EDNS the upstream truncates: we ask it again over TCP, and hand dig a TC reply
    # (60 records exceed its 512 bytes), after which dig asks us over TCP.
    before = server.upstream.tcp_queries
    cut = server.dig("+noedns", "+ignore", "big.example")
    assert "flags: qr tc rd ra" in cut or re.search(r"flags: qr[a-z ]* tc", cut)
    assert server.upstream.tcp_queries > before
    assert len(server.short("+noedns", "big.example")) == 60


def test_registration_over_http_then_dig(server: Server) -> None:
    body = {"addresses": ["10.1.2.3"], "srv": [{"service": "_http._tcp", "port": 8080}]}
    assert server.http("PUT", "/v1/names/api", body, token=None)[0] == 401
    assert server.http("PUT", "/v1/names/api", {"addresses": "x"})[0] == 400
    t0 = time.monotonic()
    assert server.http("PUT", "/v1/names/api", body)[0] == 200
    wait_until(lambda: server.short("api.netplug.internal") == ["10.1.2.3"], 5, "the new name")
    elapsed = time.monotonic() - t0
    srv = server.short("_http._tcp.api.netplug.internal", "SRV")
    assert srv == sorted(["0", "0", "8080", "api.netplug.internal."])
    names = server.http("GET", "/v1/names")[1]["names"]
    assert {"api.netplug.internal", "web.blue.netplug.internal"} <= {n["name"] for n in names}
    assert server.http("DELETE", "/v1/names/api")[0] == 204
    wait_until(
        lambda: "status: NXDOMAIN" in server.dig("api.netplug.internal"), 5, "the name to go"
    )
    assert elapsed < 3  # dig itself starts in ~0.1 s; slack for a loaded machine


def test_container_names_follow_the_store(server: Server) -> None:
    key = _attachment(server.store, "blue", "c9", "late", "10.244.1.9")
    wait_until(lambda: server.short("late.blue.netplug.internal") == ["10.244.1.9"], 5, "late")
    server.store.delete(key)
    wait_until(lambda: "NXDOMAIN" in server.dig("late.blue.netplug.internal"), 5, "late gone")


def test_fuzz_burst_then_still_answers(server: Server) -> None:
    rng = random.Random(7)
    seed = bytes(DNSRecord.question("web.blue.netplug.internal").pack())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(3000):
            if i % 3 == 0:
                data = rng.randbytes(rng.randint(0, 300))
            else:
                data = bytearray(seed)
                for _ in range(rng.randint(1, 4)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
                data = bytes(data[: rng.randint(1, len(data))]) if i % 5 == 0 else bytes(data)
            sock.sendto(data, ("127.0.0.1", server.dns_port))
    finally:
        sock.close()
    with socket.create_connection(("127.0.0.1", server.dns_port), timeout=2) as tcp:
        tcp.sendall(b"\xff\xff" + b"\x00" * 20)  # claims 65535 bytes, sends 20, hangs up
    assert server.proc.poll() is None
    wait_until(
        lambda: server.short("web.blue.netplug.internal") == ["10.244.1.5"],
        3,
        "answers after the burst",
    )
    assert server.short("web.blue.netplug.internal", "+tcp") == ["10.244.1.5"]


def test_health_and_metrics(server: Server) -> None:
    status, health = server.http("GET", "/healthz")
    assert status == 200 and health["status"] == "ok" and health["store"] == "up"
    status, metrics = server.http("GET", "/metrics")
    text = metrics["text"]
    for name in (
        "netplug_dns_queries_total",
        "netplug_dns_request_duration_seconds_bucket",
        "netplug_dns_registry_names",
        "netplug_dns_cache_hits_total",
    ):
        assert name in text
    assert "Traceback" not in server.log.read_text()
