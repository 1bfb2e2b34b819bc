"""The registration API through aiohttp's test client, on a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dns_testing import attachment
from dnslib import QTYPE

from netplug.dns import api
from netplug.dns.api import make_app, serve
from netplug.dns.metrics import Metrics, tag
from netplug.dns.writer import RegistryWriter
from netplug.ipam.store.base import LeaseNotFound, StoreUnavailable
from netplug.ipam.store.sqlite import SQLiteStore

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(str(tmp_path / "netplug.db"))
    yield s
    s.close()


@pytest.fixture
async def client(aiohttp_client, store: SQLiteStore):
    metrics = Metrics()
    metrics.loop.answers[tag(QTYPE.A, 0)] += 1
    app = make_app(RegistryWriter(store), metrics=metrics, health=lambda: {"store": "up"})
    return await aiohttp_client(app)


@pytest.fixture
async def guarded(aiohttp_client, store: SQLiteStore):
    return await aiohttp_client(
        make_app(RegistryWriter(store), token=TOKEN, domain="Cluster.Test.")
    )


async def test_put_get_delete(client, store: SQLiteStore) -> None:
    body = {"addresses": ["10.1.2.3", "fd00::3"], "srv": [{"service": "_http._tcp", "port": 8080}]}
    r = await client.put("/v1/names/API", json=body)
    assert r.status == 200
    assert (await r.json())["name"] == "api.netplug.internal"
    assert store.get("/netplug/dns/api") is not None
    kv = attachment("blue", "h1", "c1", ["web"], ["10.244.1.5"])
    store.put(kv.key, kv.value)
    names = (await (await client.get("/v1/names")).json())["names"]
    assert [(n["name"], n["source"]) for n in names] == [
        ("api.netplug.internal", "api"),
        ("web.blue.netplug.internal", "container"),
    ]
    assert names[0]["srv"] == [{"service": "_http._tcp", "port": 8080, "priority": 0, "weight": 0}]
    one = await client.get("/v1/names/web.blue")
    assert (await one.json())["names"][0]["containerID"] == "c1"
    assert (await client.get("/v1/names/nope")).status == 404
    assert (await client.delete("/v1/names/api")).status == 204
    r = await client.delete("/v1/names/api")
    assert r.status == 404 and "no API name" in (await r.json())["error"]
    assert store.get("/netplug/dns/api") is None


async def test_ttl_expires_unless_put_again(client, store: SQLiteStore) -> None:
    assert (
        await client.put("/v1/names/temp", json={"addresses": ["10.1.2.3"], "ttl": 1})
    ).status == 200
    first = store.get("/netplug/dns/temp")
    assert first is not None and first.lease
    assert (
        await client.put("/v1/names/temp", json={"addresses": ["10.1.2.3"], "ttl": 1})
    ).status == 200
    second = store.get("/netplug/dns/temp")
    assert second.lease != first.lease
    with pytest.raises(LeaseNotFound):
        store.keepalive(first.lease)  # the old lease is revoked, not left to linger
    deadline = time.monotonic() + 4
    while (await (await client.get("/v1/names")).json())["names"]:
        assert time.monotonic() < deadline, "the name did not expire"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"not json", 400, "not JSON"),
        (b"[1]", 400, "JSON object"),
        (b'{"addresses": []}', 400, "addresses"),
        (b'{"addresses": ["10.1.2.3"], "ttl": -1}', 400, "ttl"),
        (b'{"addresses": ["10.1.2.3"], "extra": 1}', 400, "unknown field"),
        (b'{"addresses": ["10.1.2.300"]}', 400, "not an IPv4 or IPv6"),
        (b"[" * 1100 + b"]" * 1100, 400, "nested too deeply"),  # was a 500
        (b'{"addresses": ["10.1.2.3"], "ttl": NaN}', 400, "NaN is not JSON"),
        (b'{"addresses": ["10.1.2.3"], "ttl": 1' + b"0" * 4400 + b"}", 400, "too large"),
        (b'{"addresses": ["\xff"]}', 400, "not JSON"),
        (b'{"addresses": [' + b'"10.1.2.3",' * 5000 + b'"10.1.2.4"]}', 400, "at most 64"),
    ],
)
async def test_rejected_bodies_change_nothing(
    client, store: SQLiteStore, body: bytes, status: int, fragment: str
) -> None:
    before = store.status()
    r = await client.put("/v1/names/api", data=body)
    assert r.status == status
    assert fragment in (await r.json())["error"]
    assert store.status() == before


async def test_bad_name_and_oversized_body(client, store: SQLiteStore) -> None:
    r = await client.put("/v1/names/bad_name", json={"addresses": ["10.1.2.3"]})
    assert r.status == 400 and "not a DNS label" in (await r.json())["error"]
    r = await client.put("/v1/names/big", data=b" " * 100_000)
    assert r.status == 413 and "over 65536 bytes" in (await r.json())["error"]

    async def chunks():  # no Content-Length: refused once past the limit
        for _ in range(20):
            yield b" " * 8192

    r = await client.put("/v1/names/big", data=chunks())
    assert r.status == 413 and "over 65536 bytes" in (await r.json())["error"]
    assert store.status() == 0
    r = await client.post("/v1/names/api", data=b"{}")
    assert r.status == 405 and (await r.json())["error"]
    r = await client.get("/v2/nothing")
    assert r.status == 404 and (await r.json())["error"]


async def test_trailing_dot_is_fully_qualified(client, store: SQLiteStore) -> None:
    body = {"addresses": ["10.1.2.3"]}
    for method in (client.put, client.delete, client.get):
        r = await method("/v1/names/x.example.org.", json=body)
        assert r.status == 400, method
        assert "not inside netplug.internal" in (await r.json())["error"]
    assert store.status() == 0
    r = await client.put("/v1/names/x.netplug.internal.", json=body)
    assert r.status == 200 and (await r.json())["name"] == "x.netplug.internal"
    assert store.get("/netplug/dns/x") is not None
    assert (await client.get("/v1/names/x.netplug.internal.")).status == 200
    assert (await client.delete("/v1/names/x.netplug.internal.")).status == 204
    assert store.get("/netplug/dns/x") is None


async def test_token_needed_for_changes(guarded, store: SQLiteStore) -> None:
    body = {"addresses": ["10.1.2.3"]}
    r = await guarded.put("/v1/names/api", json=body)
    assert r.status == 401 and "Bearer" in r.headers["WWW-Authenticate"]
    assert (
        await guarded.put("/v1/names/api", json=body, headers={"Authorization": "Bearer nope"})
    ).status == 401
    assert (await guarded.delete("/v1/names/api")).status == 401
    assert store.status() == 0
    r = await guarded.put("/v1/names/api", json=body, headers=AUTH)
    assert r.status == 200 and (await r.json())["name"] == "api.cluster.test"
    assert (await guarded.get("/v1/names")).status == 200  # reads are open
    assert (await guarded.delete("/v1/names/api.cluster.test", headers=AUTH)).status == 204


async def test_health_and_metrics(client) -> None:
    assert await (await client.get("/healthz")).json() == {"status": "ok", "store": "up"}
    r = await client.get("/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    assert 'netplug_dns_queries_total{rcode="NOERROR",type="A"} 1.0' in await r.text()


class DownStore:
    def __getattr__(self, name: str):
        def fail(*args, **kwargs):
            raise StoreUnavailable("unreachable for the test")

        return fail


async def test_store_down_is_503(aiohttp_client) -> None:
    client = await aiohttp_client(make_app(RegistryWriter(DownStore())))  # type: ignore[arg-type]
    r = await client.put("/v1/names/api", json={"addresses": ["10.1.2.3"]})
    assert r.status == 503 and "unreachable" in (await r.json())["error"]
    assert (await client.get("/v1/names")).status == 503


# -- slow clients, on a real socket -------------------------------------------------


@pytest.fixture
async def served(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    """The API served as netplug-dns and netplugd serve it, with short timeouts."""
    monkeypatch.setattr(api, "BODY_TIMEOUT", 0.5)
    monkeypatch.setattr(api, "HTTP_IDLE", 0.5)
    monkeypatch.setattr(api, "LINGER", 0.5)
    runner = await serve(make_app(RegistryWriter(store)), "127.0.0.1", 0)
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_slow_body_gets_408(served: int, store: SQLiteStore) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    try:
        t0 = time.monotonic()
        writer.write(b"PUT /v1/names/api HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n{")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert time.monotonic() - t0 < 3
        assert head.startswith(b"HTTP/1.1 408") and b"Connection: close" in head
        size = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        error = json.loads(await asyncio.wait_for(reader.readexactly(size), 2))["error"]
        assert "did not arrive within 0.5 s" in error
        writer.write(b"more")  # dropped, and the connection closes
        assert await asyncio.wait_for(reader.read(), 3) == b""
    finally:
        writer.close()
    assert store.status() == 0


async def test_slow_headers_are_cut_off(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    try:
        writer.write(b"PUT /v1/names/api HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
