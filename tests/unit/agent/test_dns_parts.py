"""The agent's two DNS parts, fed by a real store view on a real SQLite store:
the registry's snapshot and the listeners on this host's gateways (loopback
blocks here, so the listeners really bind), a malformed block skipped."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from ipaddress import ip_network

from dnslib import RCODE, DNSRecord
from prometheus_client import CollectorRegistry

from netplug.agent import dns as agent_dns
from netplug.agent.dns import AgentDNS
from netplug.agent.records import BadRecords
from netplug.agent.store_view import Full, StoreView
from netplug.agent.supervisor import Backoff, Supervisor
from netplug.dns.metrics import Metrics
from netplug.ipam.allocations import IPAM, Pool
from netplug.ipam.schema import Blocks
from netplug.ipam.store.sqlite import SQLiteStore

from etcd_server import free_port


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)  # the parts hand their work to this loop


def block(cidr: str) -> str:
    return Blocks.key("lo", ip_network(cidr))


async def test_the_dns_parts_follow_the_store_view(tmp_path) -> None:
    store = SQLiteStore(str(tmp_path / "netplug.db"), poll_interval=0.002)
    port = free_port("127.0.0.1")
    bad = BadRecords()
    dns = AgentDNS("h1", "netplug.internal", [], Metrics(CollectorRegistry()), port, bad)
    dns.bind_loop()
    store.put(block("127.0.0.0/29"), Blocks.encode("h1"))
    store.put(block("127.0.1.0/29"), b"not json")
    store.put(block("127.0.2.0/29"), Blocks.encode("h2"))  # another host's
    view, supervisor = StoreView(store), Supervisor(Backoff(initial=0.02))
    for name, follow, prefixes in [
        ("dns-registry", dns.follow_registry, agent_dns.REGISTRY),
        ("dns-listeners", dns.follow_listeners, agent_dns.LISTENERS),
    ]:
        supervisor.start(name, view.subscribe(name, prefixes).runs(follow))
    supervisor.start("store-view", view.run)

    def listening() -> list[str]:
        return [str(listener) for listener in dns.server.listeners]

    try:
        await until(lambda: listening() == [f"127.0.0.1:{port}@lo"])
        (skipped,) = bad.health()
        assert skipped["part"] == "dns-listeners" and skipped["key"] == block("127.0.1.0/29")
        assert skipped["error"].startswith("MalformedRecord: block record: expected JSON")
        # The registry's part holds the blocks as well (for reverse zones).
        await until(lambda: len(dns.server.snapshot.blocks) == 3)
        # The bad block is fixed and given to this host; the first moves away.
        store.put(block("127.0.1.0/29"), Blocks.encode("h1"))
        store.put(block("127.0.0.0/29"), Blocks.encode("h2"))
        await until(lambda: listening() == [f"127.0.1.1:{port}@lo"])
        assert bad.health() == []
        assert all(h["restarts"] == 0 for h in supervisor.health().values())
    finally:
        await asyncio.to_thread(supervisor.stop, 5)
        await dns.close()
        store.close()


class HeldFeed:
    """A registry feed that gives nothing until ``release``: the registry's first
    read still under way (a large one takes 0.4 s at 10,000 names)."""

    def __init__(self) -> None:
        self.updates: list[Full] = []
        self.ready = threading.Event()

    def release(self, full: Full) -> None:
        self.updates.append(full)
        self.ready.set()

    def take(self, stop: threading.Event, timeout: float) -> list[Full]:
        self.ready.wait(min(timeout, 0.05))
        taken, self.updates = self.updates, []
        return taken


async def rcode_of(port: int, name: str, timeout: float) -> int | None:
    """The rcode of an A query for ``name`` on 127.0.0.1:``port``; None when no
    answer comes within ``timeout`` (nothing listens yet)."""

    def ask() -> int | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.sendto(DNSRecord.question(name).pack(), ("127.0.0.1", port))
                return DNSRecord.parse(sock.recv(4096)).header.rcode
            except OSError:  # a timeout, or ICMP port unreachable: nobody there
                return None

    return await asyncio.to_thread(ask)


async def test_a_restarted_agent_answers_only_once_it_has_read_the_registry(tmp_path) -> None:
    """Listening on the gateways before the registry's first snapshot answered every
    container name NXDOMAIN (negative, with the SOA: clients cache it) until the
    snapshot arrived."""
    store = SQLiteStore(str(tmp_path / "netplug.db"))
    IPAM(store, "h1").allocate(
        "blue", [Pool(ip_network("10.9.0.0/16"), 24)], "c1", "eth0", names=("web",)
    )
    records = store.range("/netplug/", prefix=True)
    port = free_port("127.0.0.1")
    dns = AgentDNS("h1", "netplug.internal", [], Metrics(CollectorRegistry()), port)
    dns.bind_loop()
    feed, stop = HeldFeed(), threading.Event()
    part = threading.Thread(target=dns.follow_registry, args=(feed, stop))
    part.start()
    try:
        dns.sync({"lo": {ip_network("127.0.0.0/29"): "h1"}})
        early = [await rcode_of(port, "web.blue.netplug.internal", 0.1) for _ in range(5)]
        feed.release(Full(records.revision, tuple(records.kvs)))
        await until(lambda: dns.server.snapshot.revision == records.revision)
        assert await rcode_of(port, "web.blue.netplug.internal", 2.0) == RCODE.NOERROR
        assert RCODE.NXDOMAIN not in early, early
    finally:
        stop.set()
        feed.ready.set()
        await asyncio.to_thread(part.join, 5)
        await dns.close()
        store.close()
