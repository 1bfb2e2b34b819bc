"""Latency of etcd clients as the blocking ``Store`` uses them: from a worker thread.

Starts its own etcd (``/usr/bin/etcd``, Debian's ``etcd-server``) on 127.0.0.1
in a temporary directory, which it removes afterwards, and measures for each
client the p50/p99 of a ``put`` and of a transaction with two compares
(create-if-absent of a new key, guarded by another key's version):

- ``EtcdStore``: netplug's backend (JSON gateway, HTTP/1.1 on a plain socket,
  one keep-alive connection per thread);
- ``http.client``: the same requests on the standard library's keep-alive
  ``HTTPConnection``;
- ``aiohttp``: the JSON gateway on aiohttp, its event loop in a thread of its own;
- ``aetcd``: gRPC (grpc.aio), its event loop in a thread of its own;
- ``etcd3gw``: the JSON gateway over requests.

aetcd and etcd3gw are not netplug dependencies: a client that is not
installed is reported as such (``pip install aetcd etcd3gw`` to include them).

    .venv/bin/python bench/etcd_client_bench.py [--ops 2000] [--max-seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from etcd_server import start_etcd

GUARD = "bench/guard"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` blocks the caller until a coroutine ends."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


TXN_BODY = {
    "compare": [
        {"key": "", "target": "CREATE", "result": "EQUAL", "create_revision": "0"},
        {"key": b64(GUARD), "target": "VERSION", "result": "GREATER", "version": "0"},
    ],
    "success": [{"request_put": {"key": "", "value": b64("owner")}}],
}


def txn_body(key: str) -> dict[str, Any]:
    """A create-if-absent of ``key`` guarded by GUARD's version, as the JSON gateway takes it."""
    body = json.loads(json.dumps(TXN_BODY))
    body["compare"][0]["key"] = body["success"][0]["request_put"]["key"] = b64(key)
    return body


class NetplugStore:
    name, module = "EtcdStore (netplug, raw socket)", "netplug.ipam.store.etcd"

    def __init__(self, host: str, port: int) -> None:
        from netplug.ipam.store.base import Compare, Put
        from netplug.ipam.store.etcd import EtcdStore

        self.store = EtcdStore([(host, port)])
        self.Compare, self.Put = Compare, Put

    def put(self, key: str) -> None:
        self.store.put(key, b"value")

    def txn(self, key: str) -> None:
        compares = [self.Compare.absent(key), self.Compare(GUARD, "version", ">", 0)]
        assert self.store.txn(compares, [self.Put(key, b"owner")]).succeeded

    def close(self) -> None:
        self.store.close()


class HttpClient:
    name, module = "http.client keep-alive", "http.client"

    def __init__(self, host: str, port: int) -> None:
        import http.client

        self.conn = http.client.HTTPConnection(host, port, timeout=2)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        self.conn.request("POST", f"/v3/{path}", json.dumps(body).encode(), headers)
        return json.loads(self.conn.getresponse().read())

    def put(self, key: str) -> None:
        self._post("kv/put", {"key": b64(key), "value": b64("value")})

    def txn(self, key: str) -> None:
        assert self._post("kv/txn", txn_body(key)).get("succeeded")

    def close(self) -> None:
        self.conn.close()


class Aiohttp:
    name, module = "aiohttp (JSON gateway)", "aiohttp"

    def __init__(self, host: str, port: int) -> None:
        import aiohttp

        self.base = f"http://{host}:{port}/v3"
        self.loop = LoopThread()

        async def session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))

        self.session = self.loop.run(session())

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(f"{self.base}/{path}", json=body) as response:
            return await response.json(content_type=None)

    def put(self, key: str) -> None:
        self.loop.run(self._post("kv/put", {"key": b64(key), "value": b64("value")}))

    def txn(self, key: str) -> None:
        assert self.loop.run(self._post("kv/txn", txn_body(key))).get("succeeded")

    def close(self) -> None:
        self.loop.run(self.session.close())
        self.loop.stop()


class Aetcd:
    name, module = "aetcd (gRPC)", "aetcd"

    def __init__(self, host: str, port: int) -> None:
        import aetcd

        self.loop = LoopThread()

        async def connect() -> aetcd.Client:
            client = aetcd.Client(host, port, timeout=2)
            await client.connect()
            return client

        self.client = self.loop.run(connect())

    def put(self, key: str) -> None:
        self.loop.run(self.client.put(key.encode(), b"value"))

    def txn(self, key: str) -> None:
        t = self.client.transactions
        compare = [t.create(key.encode()) == 0, t.version(GUARD.encode()) > 0]
        coro = self.client.transaction(compare, [t.put(key.encode(), b"owner")], [])
        succeeded, _ = self.loop.run(coro)
        assert succeeded

    def close(self) -> None:
        self.loop.run(self.client.close())
        self.loop.stop()


class Etcd3gw:
    name, module = "etcd3gw (requests)", "etcd3gw"

    def __init__(self, host: str, port: int) -> None:
        import etcd3gw

        self.client = etcd3gw.client(host=host, port=port, timeout=2)

    def put(self, key: str) -> None:
        self.client.put(key, "value")

    def txn(self, key: str) -> None:
        assert self.client.transaction(txn_body(key)).get("succeeded")

    def close(self) -> None:
        self.client.session.close()


CANDIDATES = [NetplugStore, HttpClient, Aiohttp, Aetcd, Etcd3gw]


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49] * 1000, q[98] * 1000


def timed(op: Callable[[str], None], prefix: str, ops: int, deadline: float) -> list[float]:
    """Latency of ``op`` on fresh keys, ``ops`` times or until ``deadline``."""
    samples = []
    for i in range(ops):
        if time.monotonic() > deadline:
            break
        key = f"{prefix}/{i}"
        started = time.perf_counter()
        op(key)
        samples.append(time.perf_counter() - started)
    return samples


def import_ms(module: str) -> float | None:
    """Milliseconds to import ``module`` in a fresh interpreter that has already
    imported the store's interface (None if the module is missing)."""
    code = (
        "import importlib, time; import netplug.ipam.store.base; t = time.perf_counter(); "
        f"importlib.import_module({module!r}); print((time.perf_counter() - t) * 1000)"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    return float(done.stdout) if done.returncode == 0 else None


def bench(clients: dict[str, Any], ops: int, rounds: int, deadline: float) -> dict[str, Any]:
    """Runs in one worker thread, as the store's callers do. Rounds alternate between
    the clients so that a slow spell of the disk (etcd fsyncs every write) hits all alike."""
    samples: dict[str, dict[str, list[float]]] = {n: {"put": [], "txn": []} for n in clients}
    for name, client in clients.items():
        timed(client.put, f"bench/warm/{name}", max(ops // 10, 20), deadline)
    for r in range(rounds):
        for name, client in clients.items():
            got = samples[name]
            got["put"] += timed(client.put, f"bench/put/{r}/{name}", ops // rounds, deadline)
            got["txn"] += timed(client.txn, f"bench/txn/{r}/{name}", ops // rounds, deadline)
    return {
        name: {"put": percentiles(got["put"]), "txn": percentiles(got["txn"])}
        for name, got in samples.items()
    }


def in_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` run in a new thread (errors are raised here)."""
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as e:
            error.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=4000, help="operations of each kind")
    parser.add_argument("--rounds", type=int, default=8, help="alternations between clients")
    parser.add_argument("--max-seconds", type=float, default=120, help="bound on the whole run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    deadline = time.monotonic() + args.max_seconds
    skipped: dict[str, str] = {}
    imports: dict[str, float] = {}
    for cls in CANDIDATES:
        ms = import_ms(cls.module)
        if ms is None:
            skipped[cls.name] = f"not installed (pip install {cls.module})"
        else:
            imports[cls.name] = ms
    with tempfile.TemporaryDirectory(prefix="netplug-etcd-bench-") as tmp:
        etcd = start_etcd(Path(tmp))
        clients: dict[str, Any] = {}
        try:
            etcd.request("POST", "/v3/kv/put", {"key": b64(GUARD), "value": b64("x")})
            for cls in CANDIDATES:
                if cls.name not in skipped:
                    clients[cls.name] = in_thread(lambda c=cls: c(etcd.host, etcd.client_port))
            results = in_thread(lambda: bench(clients, args.ops, args.rounds, deadline))
        finally:
            for client in clients.values():
                client.close()
            etcd.stop()
    for name, ms in imports.items():
        results[name]["import_ms"] = ms
    if args.json:
        print(json.dumps({**results, **{n: {"error": e} for n, e in skipped.items()}}, indent=2))
        return
    print(f"etcd 3.4 on loopback, {args.ops} ops of each kind per client, from a worker thread")
    print(
        f"{'client':32} {'put p50':>8} {'put p99':>8} {'txn p50':>8} {'txn p99':>8} {'import':>7}"
    )
    for name, r in results.items():
        (p50, p99), (t50, t99) = r["put"], r["txn"]
        print(f"{name:32} {p50:8.2f} {p99:8.2f} {t50:8.2f} {t99:8.2f} {r['import_ms']:7.1f}")
    for name, reason in skipped.items():
        print(f"{name:32} {reason}")
    print("(milliseconds; import: on top of netplug.ipam.store.base)")


if __name__ == "__main__":
    main()
