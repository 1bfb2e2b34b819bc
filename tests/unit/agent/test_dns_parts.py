"""The agent's two DNS parts, fed by a real store view on a real SQLite store:
the registry's snapshot and the listeners on this host's gateways (loopback
blocks here, so the listeners really bind), a malformed block skipped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from ipaddress import ip_network

from prometheus_client import CollectorRegistry

from netplug.agent import dns as agent_dns
from netplug.agent.dns import AgentDNS
from netplug.agent.records import BadRecords
from netplug.agent.store_view import StoreView
from netplug.agent.supervisor import Backoff, Supervisor
from netplug.dns.metrics import Metrics
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
