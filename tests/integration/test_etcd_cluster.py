"""A 3-host lab on a 3-member etcd (``netns-lab up --etcd-members 3``) that loses
its leader, then a follower, during a storm of 200 parallel ADDs, and a member
cut off by SIGSTOP: no duplicate address, nothing leaked, every ADD done within
one retry and 5 s, the hosts' leases kept."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_store_outage import attachment_ids, container_veths, ping

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


def host_names(lab) -> set[str]:
    with lab.store() as store:
        return {kv.key.rsplit("/", 1)[1] for kv in store.range("/netplug/hosts/", True).kvs}


def watch_attachments(lab, stop: threading.Event, seen: list) -> None:
    with lab.store() as store:
        for batch in store.watch("/netplug/attachments/", store.status() + 1, timeout=0.2):
            seen.extend(e.kv.key.rsplit("/", 2)[1] for e in batch if e.type == "put")
            if stop.is_set():
                return


@pytest.mark.parametrize("lab", ["etcd"], indirect=True)
def test_a_cut_off_member_and_a_paused_one_leave_the_cluster_serving(cluster_lab):
    """Member 1 (every client's first endpoint) loses its peers (raft traffic dropped in
    its namespace; clients still reach it), later member 2 is SIGSTOPped: ADDs go on
    within the bound, blocks leased meanwhile reach the other hosts' overlay (their
    watches left the member), and a watch from before sees every new attachment."""
    lab = cluster_lab
    stop, seen, host_seen = threading.Event(), [], []
    watchers = [
        threading.Thread(target=watch_attachments, args=(lab, stop, seen)),
        threading.Thread(target=host_events, args=(lab, stop, host_seen)),
    ]
    for thread in watchers:
        thread.start()
    try:
        lab.partition_etcd_member(0)
        for host, name in (("host1", "a"), ("host2", "b")):
            started = time.monotonic()
            lab.run_container(host, name)
            assert time.monotonic() - started < ADD_BOUND
        b = lab.state.load()["containers"]["b"]["address"].split("/")[0]
        assert eventually(lambda: ping(lab, "a", b), timeout=15)
        lab.partition_etcd_member(0, cut=False)

        lab.pause_etcd_member(1)
        try:
            started = time.monotonic()
            lab.run_container("host3", "c")
            assert time.monotonic() - started < ADD_BOUND
            c = lab.state.load()["containers"]["c"]["address"].split("/")[0]
            assert eventually(lambda: ping(lab, "a", c), timeout=15)
        finally:
            lab.pause_etcd_member(1, paused=False)
        assert eventually(lambda: set(seen) == {"a", "b", "c"}, timeout=10)
    finally:
        stop.set()
        for thread in watchers:
            thread.join(timeout=10)
    # Every host is (again) in the others' peers. Not asserted: that no host record
    # ever went. In about one run in five etcd 3.4.23 drops one: the member that led
    # before the cut or the pause, back again, revokes by its stale clock a lease
    # the new leader kept alive, through the new leader (etcd-io/etcd#12528, fixed
    # by #16822 in later 3.4/3.5 releases); the agent registers again once it sees that.
    assert eventually(lambda: host_names(lab) == set(HOSTS), timeout=10)
    dropped = [e.kv.key for e in host_seen if e.type == "delete"]
    print(f"host records dropped during the cut: {dropped}")
