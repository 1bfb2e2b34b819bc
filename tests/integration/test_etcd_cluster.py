"""A 3-host lab on a 3-member etcd (``netns-lab up --etcd-members 3``) that loses
its leader, then a follower, during a storm of 200 parallel ADDs, and a member
cut off by SIGSTOP: no duplicate address, nothing leaked, every ADD done within
one retry and 5 s, the hosts' leases kept."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_store_outage import attachment_ids, container_veths

from netplug.lab import namespaces

from netplug_env import eventually

pytestmark = pytest.mark.netns

ADDS = 200
HOSTS = ("host1", "host2", "host3")
ADD_BOUND = 5.0  # seconds an ADD may take, each attempt


@pytest.fixture
def cluster_lab(lab):
    lab.etcd_members = 3
    lab.up(3, "etcd")
    return lab


def host_events(lab, stop: threading.Event, seen: list) -> None:
    """Every event under the hosts' records until ``stop`` (a lost lease: a delete)."""
    with lab.store() as store:
        for batch in store.watch("/netplug/hosts/", store.status() + 1, timeout=0.2):
            seen.extend(batch)
            if stop.is_set():
                return


@pytest.mark.parametrize("lab", ["etcd"], indirect=True)
def test_a_storm_of_adds_rides_out_a_leader_kill_then_a_follower_kill(cluster_lab):
    lab = cluster_lab
    names = [f"s{i:03d}" for i in range(ADDS)]
    netns = {name: namespaces.create(lab.prefix + f"c-{name}") for name in names}
    results: dict[str, dict] = {}
    attempts: dict[str, list[float]] = {}
    done = threading.Semaphore(0)
    stop, host_seen = threading.Event(), []
    watcher = threading.Thread(target=host_events, args=(lab, stop, host_seen))
    watcher.start()

    def add(i: int) -> None:
        name = names[i]
        try:
            for _ in range(2):  # the caller retries once, as a runtime may
                started = time.monotonic()
                try:
                    results[name] = lab.cni("ADD", name, HOSTS[i % 3])
                    return
                except RuntimeError:
                    pass
                finally:
                    attempts.setdefault(name, []).append(time.monotonic() - started)
        finally:
            done.release()

    try:
        with ThreadPoolExecutor(24) as pool:
            for i in range(ADDS):
                pool.submit(add, i)
            for _ in range(50):
                assert done.acquire(timeout=120)
            leader = lab.etcd_leader()
            lab.stop_etcd_member(leader, kill=True)
            for _ in range(50):
                assert done.acquire(timeout=120)
            lab.start_etcd_member(leader)
            new_leader = lab.etcd_leader()
            follower = next(i for i in range(3) if i not in (leader, new_leader))
            lab.stop_etcd_member(follower, kill=True)
        retried = sorted(name for name, took in attempts.items() if len(took) > 1)
        slowest = max(max(took) for took in attempts.values())
        print(f"storm: {len(retried)} ADDs retried once, slowest attempt {slowest:.2f} s")
        assert sorted(results) == names, f"failed twice: {sorted(set(names) - set(results))}"
        assert slowest < ADD_BOUND
        addresses = [r["ips"][0]["address"] for r in results.values()]
        assert len(set(addresses)) == ADDS, "duplicate addresses"
        assert attachment_ids(lab) == set(names)
        assert sum(len(container_veths(lab, host)) for host in HOSTS) == ADDS

        with ThreadPoolExecutor(24) as pool:
            list(pool.map(lambda i: lab.cni("DEL", names[i], HOSTS[i % 3]), range(ADDS)))
        assert eventually(lambda: attachment_ids(lab) == set(), timeout=20)
        with lab.store() as store:
            assert store.range("/netplug/ips/", prefix=True).kvs == []
        assert all(container_veths(lab, host) == set() for host in HOSTS)
    finally:
        stop.set()
        watcher.join(timeout=10)
        for name in names:
            namespaces.delete(netns[name])
    # The agents' leases held through both kills: no host record went.
    assert [e for e in host_seen if e.type == "delete"] == []


@pytest.mark.parametrize("lab", ["etcd"], indirect=True)
def test_a_paused_member_leaves_the_cluster_serving(cluster_lab):
    lab = cluster_lab
    lab.pause_etcd_member(0)  # every client's first endpoint
    try:
        started = time.monotonic()
        lab.run_container("host1", "a")
        lab.run_container("host2", "b")
        assert time.monotonic() - started < 2 * ADD_BOUND
        assert eventually(lambda: attachment_ids(lab) == {"a", "b"})
        with lab.store() as store:
            hosts = store.range("/netplug/hosts/", prefix=True).kvs
        assert len(hosts) == 3
    finally:
        lab.pause_etcd_member(0, paused=False)
