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
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from netplug.ipam.store.sqlite import SQLiteStore

from fake_upstream import FakeUpstream

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
