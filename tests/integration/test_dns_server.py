"""The real ``netplug-dns`` on loopback, asked by real ``dig``, with a fake upstream.

The server is ``dns_process.running_dns``: on 127.0.0.1 with ports the kernel
picks, killed by its PID in ``finally``. No namespaces, no root.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import time
from collections.abc import Iterator

import pytest
from dnslib import DNSRecord

from dns_process import Server, attachment, running_dns, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("dig") is None and os.environ.get("CI") != "true", reason="needs dig (dnsutils)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_dns(tmp_path_factory.mktemp("netplug-dns")) as running:
        yield running


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
    before = server.upstream.tcp
    cut = server.dig("+noedns", "+ignore", "big.example")
    assert "flags: qr tc rd ra" in cut or re.search(r"flags: qr[a-z ]* tc", cut)
    assert server.upstream.tcp > before
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
    key = attachment(server.store, "blue", "c9", "late", "10.244.1.9")
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
