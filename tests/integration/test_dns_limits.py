"""Hostile clients against the real ``netplug-dns`` (issue 9, items 11 and 14).

Clients that hold many idle TCP connections, send bodies slowly or not at all,
or send bodies no registration looks like: each gets a bounded answer, and
every other client is still served. One server for the module, on loopback;
other clients come from other loopback addresses (127.0.0.2 and up).
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from netplug.dns.api import BODY_TIMEOUT
from netplug.dns.server import MAX_TCP, TCP_IDLE, TCP_IO, TCP_PER_CLIENT

import processes
from dns_process import Server, running_dns, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("dig") is None and os.environ.get("CI") != "true", reason="needs dig (dnsutils)"
)

ANSWER_BOUND = 3.0  # seconds within which a client's TCP query must be answered


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_dns(tmp_path_factory.mktemp("netplug-dns-limits")) as running:
        yield running


def tcp_dig(server: Server, source: str, name: str = "web.blue.netplug.internal") -> float:
    """Ask ``name`` over TCP from ``source``; asserts the answer, returns the seconds taken."""
    t0 = time.monotonic()
    where = ["@127.0.0.1", "-p", str(server.dns_port), "-b", source]
    out = subprocess.run(
        ["dig", *where, "+tcp", "+short", "+time=5", "+tries=1", name],
        capture_output=True,
        text=True,
        timeout=15,
    )
    elapsed = time.monotonic() - t0
    assert out.stdout.split() == ["10.244.1.5"], f"{source}: {out.stdout}{out.stderr}"
    return elapsed


def connect_idle(port: int, sources: list[str], each: int, socks: list[socket.socket]) -> None:
    """Open ``each`` TCP connections from every source address, send nothing, and
    add them to ``socks`` (the caller closes them)."""
    for source in sources:
        for _ in range(each):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.settimeout(5)
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", port))


def still_open(socks: list[socket.socket], closed: set[socket.socket]) -> int:
    """How many of ``socks`` the server has not closed (EOF or reset); adds the
    closed ones to ``closed``."""
    readable, _, _ = select.select([s for s in socks if s not in closed], [], [], 0.2)
    for sock in readable:
        try:
            data = sock.recv(1)
        except OSError:
            data = b""
        assert data == b"", "the server sent something nobody asked for"
        closed.add(sock)
    return len(socks) - len(closed)


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def test_one_client_with_300_idle_connections_shuts_no_one_out(server: Server) -> None:
    socks: list[socket.socket] = []
    closed: set[socket.socket] = set()
    try:
        t0 = time.monotonic()
        connect_idle(server.dns_port, ["127.0.0.1"], 300, socks)
        assert tcp_dig(server, "127.0.0.2") < ANSWER_BOUND  # another client: was refused
        assert tcp_dig(server, "127.0.0.1") < ANSWER_BOUND  # the hog itself, in place of one
        wait_until(
            lambda: still_open(socks, closed) <= TCP_PER_CLIENT, 5, "the client's surplus to close"
        )
        # What it keeps is closed once idle for TCP_IDLE (slack for a loaded machine).
        wait_until(lambda: still_open(socks, closed) == 0, TCP_IDLE + 5, "idle connections closed")
        assert time.monotonic() - t0 > TCP_IDLE - 1  # by the idle timeout, not sooner
    finally:
        close_all(socks)
    assert_closed_for(server, "client_limit", "timeout")


def assert_closed_for(server: Server, *reasons: str) -> None:
    text = server.http("GET", "/metrics")[1]["text"]
    for reason in reasons:
        assert f'netplug_dns_tcp_closed_total{{reason="{reason}"}}' in text, reason


def test_many_clients_filling_the_server_shut_no_newcomer_out(server: Server) -> None:
    sources = [f"127.0.0.{i}" for i in range(10, 10 + MAX_TCP // TCP_PER_CLIENT + 4)]
    socks: list[socket.socket] = []
    closed: set[socket.socket] = set()
    try:
        connect_idle(server.dns_port, sources, TCP_PER_CLIENT, socks)
        assert len(socks) > MAX_TCP
        assert tcp_dig(server, "127.0.0.3") < ANSWER_BOUND
        wait_until(lambda: still_open(socks, closed) < MAX_TCP, 5, "the longest idle to close")
    finally:
        close_all(socks)
    assert_closed_for(server, "server_full")


def test_half_sent_tcp_query_is_cut_off(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.dns_port), timeout=TCP_IDLE + 5) as sock:
        sock.sendall(b"\x00\x40" + b"\x00" * 10)  # announces 64 bytes, sends 10
        t0 = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - t0 < TCP_IO + 1.5  # the read timeout, not the idle one
    assert tcp_dig(server, "127.0.0.2") < ANSWER_BOUND


def test_slow_body_gets_408_within_the_bound(server: Server) -> None:
    t0 = time.monotonic()
    status, answer = server.raw_http(
        "PUT", "/v1/names/slow", b'{"', length=60_000, timeout=BODY_TIMEOUT + 5
    )
    assert status == 408 and "did not arrive" in answer["error"]
    assert time.monotonic() - t0 < BODY_TIMEOUT + 5  # was held for over 70 s
    assert server.http("GET", "/v1/names/slow")[0] == 404


@pytest.mark.parametrize(
    ("body", "length", "status", "fragment"),
    [
        (b"[" * 1100 + b"]" * 1100, None, 400, "nested too deeply"),  # 2 KB: was a 500
        (b'{"addresses": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", None, 400, "nested too deeply"),
        (b'{"addresses": ["10.1.2.3"], "ttl": NaN}', None, 400, "NaN"),
        (b'{"addresses": ["10.1.2.3"], "ttl": ' + b"9" * 5000 + b"}", None, 400, "too large"),
        (b'{"addresses": ["\xff\xfe"]}', None, 400, "not JSON"),
        (b'{"addresses": [' + b'"10.1.2.3",' * 5000 + b'"10.1.2.4"]}', None, 400, "at most 64"),
        (b'{"addresses": {"10.1.2.3": 1}}', None, 400, '"addresses"'),
        (
            b'{"addresses": ["10.1.2.3"], "srv": [{"service": "_a._tcp", "port": "80"}]}',
            None,
            400,
            "port",
        ),
        (b"{}", 70_000, 413, "over 65536 bytes"),  # refused before it is sent
    ],
)
def test_hostile_bodies_are_refused_and_the_server_keeps_answering(
    server: Server, body: bytes, length: int | None, status: int, fragment: str
) -> None:
    before = server.http("GET", "/v1/names")[1]["names"]
    got, answer = server.raw_http("PUT", "/v1/names/hostile", body, length=length)
    assert got == status and fragment in answer["error"]
    assert server.http("GET", "/v1/names")[1]["names"] == before
    assert server.short("web.blue.netplug.internal") == ["10.244.1.5"]
    assert server.http("GET", "/healthz")[0] == 200
    assert "Traceback" not in server.log.read_text()


def test_trailing_dot_is_fully_qualified(server: Server) -> None:
    body = {"addresses": ["10.1.2.9"]}
    status, answer = server.http("PUT", "/v1/names/x.example.org.", body)
    assert status == 400 and "not inside netplug.internal" in answer["error"]
    assert server.http("GET", "/v1/names/x.example.org.netplug.internal")[0] == 404
    status, answer = server.http("PUT", "/v1/names/dotted.netplug.internal.", body)
    assert status == 200 and answer["name"] == "dotted.netplug.internal"
    wait_until(lambda: server.short("dotted.netplug.internal") == ["10.1.2.9"], 5, "dotted")
    status, answer = server.http("DELETE", "/v1/names/x.example.org.")
    assert status == 400 and "not inside netplug.internal" in answer["error"]
    assert server.http("DELETE", "/v1/names/dotted.netplug.internal.")[0] == 204
    wait_until(lambda: "NXDOMAIN" in server.dig("dotted.netplug.internal"), 5, "dotted gone")


# -- the same server inside netplugd ----------------------------------------------------

HOG = """
import select, socket, sys
socks = []
try:
    for _ in range(300):
        s = socket.socket()
        socks.append(s)
        s.settimeout(5)
        s.connect((sys.argv[1], 53))
    print("holding", flush=True)
    select.select([sys.stdin], [], [], 60)  # until the test closes stdin, at most 60 s
finally:
    for s in socks:
        s.close()
"""

SLOW_BODY = """
import socket, sys, time
t0 = time.monotonic()
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30) as s:
    head = b"PUT /v1/names/slow HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 60000\\r\\n\\r\\n"
    s.sendall(head + b'{"')
    print(s.recv(4096).split(b"\\r\\n")[0].decode(), round(time.monotonic() - t0, 1))
"""


@pytest.mark.netns
def test_netplugd_bounds_tcp_and_slow_bodies_too(plain_host, containers) -> None:
    host, http_port = plain_host, 18053
    in_host = ["ip", "netns", "exec", host.netns, sys.executable, "-c"]
    with host.agent(None, "--upstream", "none", "--http", f"127.0.0.1:{http_port}"):
        ctr = containers()
        result = host.add(host.conf(), "c1", ctr, env={"CNI_ARGS": "NETPLUG_NAME=web"})
        address, gateway = result["ips"][0]["address"].split("/")[0], result["ips"][0]["gateway"]

        def container_tcp_dig() -> list[str]:
            cmd = ["ip", "netns", "exec", ctr, "dig", f"@{gateway}", "+tcp", "+short"]
            cmd += ["+time=5", "+tries=1", "web.blue.netplug.internal"]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=15).stdout.split()

        wait_until(lambda: container_tcp_dig() == [address], 10, "netplugd to answer on TCP")
        # The host itself (the gateway address) holds 300 idle connections.
        hog = subprocess.Popen(
            [*in_host, HOG, gateway], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert hog.stdout is not None and hog.stdout.readline() == "holding\n"
            t0 = time.monotonic()
            assert container_tcp_dig() == [address]  # refused on the old code
            assert time.monotonic() - t0 < ANSWER_BOUND
        finally:
            processes.stop(hog)
        slow = subprocess.run(
            [*in_host, SLOW_BODY, str(http_port)], capture_output=True, text=True, timeout=60
        )
        status, seconds = slow.stdout.rsplit(" ", 1)
        assert status.startswith("HTTP/1.1 408"), slow.stdout + slow.stderr
        assert float(seconds) < BODY_TIMEOUT + 5
