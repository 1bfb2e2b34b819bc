"""100 containers added at once, then deleted at once (cni-checklist.md 1.8: parallel
operations on different containers are allowed, the plugin locks shared state itself).

Runs with and without the agent (``netplug_host``), with ipMasq so that the shared
nftables table is ensured and dropped concurrently too.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from netplug_env import ping

pytestmark = pytest.mark.netns

N = 100
# Seconds for the whole test, per mode. Without the agent each call pays about
# 0.3 s of CPU (pyroute2's import alone is 0.14 s), 200 calls on 2 cores.
BUDGET = 150.0
CALL_TIMEOUT = 60.0
PINGERS = 20


def test_parallel_add_then_del(netplug_host, containers):
    started = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str, since: float) -> float:
        now = time.monotonic()
        phases[name] = round(now - since, 1)
        return now

    with ThreadPoolExecutor(16) as pool:
        ctrs = list(pool.map(lambda _: containers(), range(N)))
    mark = phase("namespaces", started)

    conf = netplug_host.conf(ipMasq=True)
    ids = [f"par-{i:03d}" for i in range(N)]

    def call(command: str, i: int):
        return netplug_host.call(
            command, conf, container_id=ids[i], netns=ctrs[i], timeout=CALL_TIMEOUT
        )

    with ThreadPoolExecutor(N) as pool:
        adds = list(pool.map(lambda i: call("ADD", i), range(N)))
    mark = phase("ADD", mark)
    failed = [(ids[i], o.status, o.stdout, o.stderr) for i, o in enumerate(adds) if o.status]
    assert not failed, f"{len(failed)} ADDs failed, e.g. {failed[:3]}"
    addresses = [o.out["ips"][0]["address"].split("/")[0] for o in adds]
    assert len(set(addresses)) == N, "duplicate addresses"
    assert len(netplug_host.records("/netplug/attachments/")) == N
    assert "netplug-blue" in netplug_host.nft_tables()

    with ThreadPoolExecutor(PINGERS) as pool:
        reached = list(pool.map(lambda a: ping(netplug_host.netns, a), addresses))
    unreachable = [a for a, ok in zip(addresses, reached, strict=True) if not ok]
    mark = phase("ping", mark)
    assert not unreachable, f"{len(unreachable)} unreachable from the host: {unreachable[:5]}"

    with ThreadPoolExecutor(N) as pool:
        dels = list(pool.map(lambda i: call("DEL", i), range(N)))
    mark = phase("DEL", mark)
    failed = [(ids[i], o.status, o.stdout, o.stderr) for i, o in enumerate(dels) if o.status]
    assert not failed, f"{len(failed)} DELs failed, e.g. {failed[:3]}"
    assert all(o.stdout == "" for o in dels)
    assert netplug_host.veths() == set()
    assert netplug_host.records("/netplug/attachments/") == {}
    assert netplug_host.records("/netplug/ips/") == {}
    assert "netplug-blue" not in netplug_host.nft_tables()

    elapsed = time.monotonic() - started
    print(f"parallel x{N}: {elapsed:.1f} s {phases}")
    assert elapsed < BUDGET, f"took {elapsed:.1f} s (budget {BUDGET} s): {phases}"
