"""The enforcer's decisions, with the kernel's table replaced by a recorder of the
nft batches it would run (``netplug.net.policy_table``'s two calls): which batch
a feed, an ADD or a DEL costs, and what it never removes."""

from __future__ import annotations

import random
from dataclasses import replace
from ipaddress import ip_address, ip_interface, ip_network

import pytest

from netplug.agent.enforcer import Enforcer
from netplug.agent.store_view import Delta, mirror
from netplug.cni.segmentation import Reader, endpoint, inputs, network_info
from netplug.ipam.schema import (
    Allocation,
    Attachment,
    Attachments,
    NetworkRecord,
    Networks,
    Policies,
)
from netplug.ipam.store.base import Event, KeyValue
from netplug.net import NetError, policy_table
from netplug.policy.fill import Fill
from netplug.policy.model import parse
from netplug.policy.plan import Plan

RED = NetworkRecord("10.1.0.0/16", "", 7, "d", 24, 0)
GREEN = NetworkRecord("10.2.0.0/16", "", 8, "d", 24, 0)
POLICY = parse('{"name": "p", "network": "red", "select": {"names": ["db*"]}, "ingress": []}', None)


def attachment(cid: str, address: str, name: str, host: str = "h1") -> Attachment:
    block = ip_network(address + "/24", strict=False)
    alloc = Allocation(ip_interface(address + "/24"), block.network_address + 1, block)
    return Attachment("red", host, cid, "eth0", (alloc,), (name,))


DB1 = attachment("c1", "10.1.0.5", "db-1")
WEB = attachment("c2", "10.1.0.6", "web")
DB2 = attachment("c3", "10.1.0.7", "db-2")


def kv(key: str, value: bytes) -> KeyValue:
    return KeyValue(key, value, 1, 1, 1)


def records(*attachments: Attachment, policies=POLICY) -> list[KeyValue]:
    kvs = [
        kv(Networks.key("red"), Networks.encode(RED)),
        kv(Networks.key("green"), Networks.encode(GREEN)),
    ]
    kvs += [kv(Policies.key(p.name), Policies.encode(p)) for p in policies]
    return kvs + [kv(a.key, Attachments.encode(a)) for a in attachments]


class Kernel:
    """What the enforcer asked of nft, batch by batch."""

    def __init__(self) -> None:
        self.batches: list[str] = []
        self.table: dict | None = None  # what ``listing`` answers

    def apply(self, script: str) -> None:
        if script:
            self.batches.append(script)

    def listing(self, table: str) -> dict | None:
        return self.table


@pytest.fixture
def kernel(monkeypatch) -> Kernel:
    k = Kernel()
    monkeypatch.setattr(policy_table, "apply", k.apply)
    monkeypatch.setattr(policy_table, "listing", k.listing)
    return k


def enforcer(store_kvs=(), forgotten: list | None = None) -> Enforcer:
    """An enforcer of host h1; the addresses whose conntrack entries it deletes
    go to ``forgotten`` (never to a kernel: the tests run in the root namespace)."""
    sink = forgotten if forgotten is not None else []
    return Enforcer("h1", lambda: inputs(store_kvs), forget=lambda a, why: sink.append(a))


def test_the_first_feed_writes_the_table_and_an_add_then_costs_its_elements(kernel):
    e = enforcer()
    e.sync(inputs(records(DB1, WEB)))
    (first,) = kernel.batches
    assert first.startswith("add table inet netplug\ndelete table inet netplug\n")
    assert "add element inet netplug pol/p/sel4 { 10.1.0.5 }" in first
    e.cover(DB2.key, endpoint(DB2), network_info("red", RED))
    assert kernel.batches[1].splitlines() == [
        "add element inet netplug in4 { 10.1.0.7 : jump in/red }",
        "add element inet netplug pol/p/sel4 { 10.1.0.7 }",
    ]


def test_a_stale_full_feed_keeps_what_add_covered_and_del_removes_it(kernel):
    e = enforcer()
    e.sync(inputs(records(DB1)))
    e.cover(DB2.key, endpoint(DB2), network_info("red", RED))
    e.sync(inputs(records(DB1)))  # the feed has not seen DB2's record yet
    e.sync(inputs(records(DB1, DB2)))  # now it has
    assert len(kernel.batches) == 2  # neither feed changed the kernel
    e.uncover(DB2.key)  # DEL, before the feed sees the record go
    assert kernel.batches[-1].splitlines() == [
        "delete element inet netplug in4 { 10.1.0.7 }",
        "delete element inet netplug pol/p/sel4 { 10.1.0.7 }",
    ]
    e.sync(inputs(records(DB1, DB2)))  # the feed, late: DB2 stays gone
    assert len(kernel.batches) == 3


def test_an_add_before_the_first_feed_reads_the_store(kernel):
    e = enforcer(records(DB1))
    e.cover(DB2.key, endpoint(DB2), network_info("red", RED))
    (batch,) = kernel.batches
    assert "pol/p/sel4 { 10.1.0.5, 10.1.0.7 }" in batch


def test_a_network_first_added_here_is_programmed_before_the_feed_has_it(kernel):
    e = enforcer()
    e.sync(inputs(records(WEB)))
    blue = Attachment("blue", "h1", "c9", "eth0", attachment("c9", "10.9.0.5", "b").allocations)
    info = network_info("blue", NetworkRecord("10.9.0.0/16", "", 9, "d"))
    e.cover(blue.key, endpoint(blue), info)
    assert "10.9.0.0/16" in kernel.batches[-1]  # the isolation rules name it


def test_a_policy_change_rewrites_the_chains_and_keeps_the_table(kernel):
    e = enforcer()
    e.sync(inputs(records(DB1, WEB)))
    e.sync(inputs(records(DB1, WEB, policies=())))
    last = kernel.batches[-1]
    assert "flush chain inet netplug forward" in last and "delete table" not in last
    assert "delete set inet netplug pol/p/sel4" in last


def test_a_restart_reads_the_kernel_and_no_local_network_means_no_table(kernel):
    e = enforcer()
    e.sync(inputs(records(DB1)))
    kernel.table = {"nftables": [{"table": {"family": "inet", "name": "netplug"}}]}
    restarted = enforcer()
    restarted.sync(inputs(records(attachment("c7", "10.1.0.9", "x", host="h2"))))
    assert kernel.batches[-1] == "add table inet netplug\ndelete table inet netplug\n"


def test_the_last_local_container_leaves_the_table_and_the_next_add_costs_its_elements(kernel):
    """A host whose containers come and go one at a time: DEL of the last one
    takes its elements, not the table, so the next ADD adds only its own."""
    e = enforcer()
    e.sync(inputs(records(DB1)))
    e.uncover(DB1.key)  # DEL of the host's only container
    assert kernel.batches[-1].splitlines() == [
        "delete element inet netplug in4 { 10.1.0.5 }",
        "delete element inet netplug pol/p/sel4 { 10.1.0.5 }",
    ]
    e.sync(inputs(records()))  # its release reaches the feed: the table stays
    assert len(kernel.batches) == 2
    e.cover(DB2.key, endpoint(DB2), network_info("red", RED))
    assert kernel.batches[-1].splitlines() == [
        "add element inet netplug in4 { 10.1.0.7 : jump in/red }",
        "add element inet netplug pol/p/sel4 { 10.1.0.7 }",
    ]


def test_a_kept_table_goes_once_no_network_is_isolated_or_governed(kernel):
    e = enforcer()
    e.sync(inputs(records(DB1)))
    e.sync(inputs(records()))
    assert "delete table" not in kernel.batches[-1]
    open_red = [kv(Networks.key("red"), Networks.encode(replace(RED, isolate=False)))]
    e.sync(inputs(open_red))  # no policy, no isolated network left
    assert kernel.batches[-1] == "add table inet netplug\ndelete table inet netplug\n"


@pytest.fixture
def matched(monkeypatch) -> list[str]:
    """The containers (by first name) matched against a plan's selectors, in order."""
    seen: list[str] = []
    elements = Plan.elements

    def counting(plan: Plan, e, me: str):
        seen.append(min(e.names))
        return elements(plan, e, me)

    monkeypatch.setattr(Plan, "elements", counting)
    return seen


def test_a_batch_matches_only_the_containers_that_changed(kernel, matched):
    e = enforcer()
    e.sync(inputs(records(DB1, WEB)))
    assert sorted(matched) == ["db-1", "web"]
    moved = attachment("c1", "10.1.0.9", "db-1")  # DB1's record, another address
    e.sync(inputs(records(moved, WEB, DB2)))
    assert sorted(matched[2:]) == ["db-1", "db-2"]
    assert kernel.batches[-1].splitlines() == [
        "delete element inet netplug in4 { 10.1.0.5 }",
        "delete element inet netplug pol/p/sel4 { 10.1.0.5 }",
        "add element inet netplug in4 { 10.1.0.7 : jump in/red, 10.1.0.9 : jump in/red }",
        "add element inet netplug pol/p/sel4 { 10.1.0.7, 10.1.0.9 }",
    ]
    e.sync(inputs(records(moved, WEB, DB2, policies=())))  # a new plan: every one again
    assert sorted(matched[4:]) == ["db-1", "db-2", "web"]


def test_a_container_add_covered_is_not_matched_again_when_the_feed_brings_it(kernel, matched):
    e = enforcer()
    e.sync(inputs(records(DB1)))
    e.cover(DB2.key, endpoint(DB2), network_info("red", RED))
    e.sync(inputs(records(DB1, DB2)))
    assert matched == ["db-1", "db-2"]
    assert len(kernel.batches) == 2


@pytest.fixture
def fills(monkeypatch) -> list[int]:
    """How many containers' shares each fill of the table held (its cost: the
    changed containers' shares, then a diff against the kernel's)."""
    sizes: list[int] = []
    dataplane = Fill.dataplane

    def counting(fill: Fill):
        sizes.append(len(fill.shares))
        return dataplane(fill)

    monkeypatch.setattr(Fill, "dataplane", counting)
    return sizes


def test_the_feed_bringing_what_add_and_del_did_costs_no_fill(kernel, fills):
    """The ADD's own store write, and the DEL's release, reach the feed after
    (or, for the write, before) ADD and DEL programmed them: nothing is left to
    do, and the lock the next ADD waits for is not held for a fill and a diff."""
    e = enforcer()
    e.sync(inputs(records(DB1)))
    assert fills == [1]
    e.cover(DB2.key, endpoint(DB2), network_info("red", RED))  # ADD, then its record
    e.sync(inputs(records(DB1, DB2)))
    e.uncover(DB2.key)  # DEL (a fill: the elements go), then its release
    e.sync(inputs(records(DB1)))
    assert fills == [1, 1]
    e.sync(inputs(records(DB1, WEB)))  # the record before ADD: the feed programs it
    e.cover(WEB.key, endpoint(WEB), network_info("red", RED))
    assert fills == [1, 1, 2]
    assert len(kernel.batches) == 3  # the table, ADD's elements, DEL's (web: in no set)


class Refusing(Kernel):
    """nft refuses element batches while the table is gone (a `flush ruleset`)."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed = False

    def apply(self, script: str) -> None:
        if self.flushed and script.startswith("add element"):
            raise NetError(f"nft: No such file or directory: {script.splitlines()[0]}")
        super().apply(script)


def test_a_refused_batch_makes_the_next_call_read_the_table_back(monkeypatch):
    """The table flushed behind the agent's back: the ADD that meets it fails, and
    the next one reads the kernel and writes the whole table, not elements again."""
    k = Refusing()
    monkeypatch.setattr(policy_table, "apply", k.apply)
    monkeypatch.setattr(policy_table, "listing", k.listing)
    e = enforcer()
    e.sync(inputs(records(DB1)))
    k.flushed, k.table = True, None
    with pytest.raises(NetError):
        e.cover(DB2.key, endpoint(DB2), network_info("red", RED))
    e.cover(DB2.key, endpoint(DB2), network_info("red", RED))
    assert k.batches[-1].startswith("add table inet netplug\n")
    assert "10.1.0.5" in k.batches[-1] and "10.1.0.7" in k.batches[-1]


REMOTE_WEB = attachment("c9", "10.1.5.9", "web", host="h2")
WEB_ONLY = parse(
    '{"name": "p", "network": "red", "select": {"names": ["db*"]},'
    ' "ingress": [{"from": [{"names": ["web"]}]}]}',
    None,
)


def test_a_remote_address_that_leaves_a_set_has_its_entries_deleted(kernel):
    """web (on h2) is in db's peer set; replaced on its address by "other", it
    leaves it: its connections would keep their verdict, so they go. A local
    container that goes is its DEL's to delete, and a change of rules has every
    connection judged again: nothing to delete then."""
    forgotten: list = []
    e = enforcer(forgotten=forgotten)
    e.sync(inputs(records(DB1, DB2, REMOTE_WEB, policies=WEB_ONLY)))
    other = attachment("c10", "10.1.5.9", "other", host="h2")
    e.sync(inputs(records(DB1, DB2, other, policies=WEB_ONLY)))
    assert forgotten == [[ip_address("10.1.5.9")]]
    e.sync(inputs(records(DB2, other, policies=WEB_ONLY)))  # DB1 (local) went
    web2 = attachment("c11", "10.1.5.10", "web", host="h2")
    e.sync(inputs(records(DB2, other, web2, policies=WEB_ONLY)))  # joined: nothing held
    e.sync(inputs(records(DB2, other, policies=POLICY)))  # web2 went as the rules changed
    assert forgotten == [[ip_address("10.1.5.9")]]


class Recorder:
    """Each enforcer's nft batches, apart: the kernel is patched module-wide."""

    def __init__(self, monkeypatch) -> None:
        self.batches: dict[str, list[str]] = {"batches": [], "full": []}
        self.now = "batches"
        monkeypatch.setattr(policy_table, "apply", self.apply)
        monkeypatch.setattr(policy_table, "listing", lambda table: None)

    def apply(self, script: str) -> None:
        if script:
            self.batches[self.now].append(script)


def random_event(rng: random.Random, revision: int) -> Event:
    """A put or delete of one of 12 containers on three hosts, or of the policy."""
    if rng.random() < 0.1:
        policy = rng.choice([POLICY, WEB_ONLY])[0]
        return Event("put", KeyValue(Policies.key("p"), Policies.encode(policy), 1, revision, 1))
    n = rng.randrange(12)
    address = f"10.1.{rng.randrange(3)}.{rng.randrange(2, 9)}"
    found = attachment(f"c{n}", address, rng.choice(["db-1", "web", "x"]), f"h{1 + n % 3}")
    if rng.random() < 0.3:
        return Event("delete", KeyValue(found.key, b"", 0, revision, 0))
    return Event("put", KeyValue(found.key, Attachments.encode(found), 1, revision, 1))


def test_a_feed_read_batch_by_batch_programs_what_full_reads_do(monkeypatch):
    """The feed's incremental path (``Reader.apply``: the changed containers only)
    against full reads of the same records at every batch, with ADDs and DELs in
    between: the same nft batches and the same conntrack deletions."""
    rng = random.Random(12)
    kernel = Recorder(monkeypatch)
    forgotten: dict[str, list] = {"batches": [], "full": []}
    enforcers = {
        name: Enforcer("h1", lambda: inputs(()), forget=lambda a, _, n=name: forgotten[n].append(a))
        for name in forgotten
    }
    held = {kv.key: kv for kv in records(DB1, REMOTE_WEB, policies=WEB_ONLY)}
    reader = Reader()
    fed = {"batches": reader.inputs(held.values()), "full": inputs(held.values())}
    for step in range(400):
        if step % 5 == 4:
            local = attachment(f"c{rng.randrange(12)}", f"10.1.0.{rng.randrange(2, 9)}", "db-1")
            ops = [("cover", local.key, endpoint(local), network_info("red", RED))]
            gone = rng.randrange(12)
            ops += [("uncover", attachment(f"c{gone}", "10.1.0.2", "x", f"h{1 + gone % 3}").key)]
        else:
            events = [random_event(rng, 100 + 3 * step + i) for i in range(rng.randrange(1, 4))]
            mirror(held, Delta(tuple(events)))
            fed = {"batches": reader.apply(events), "full": inputs(held.values())}
            ops = [("sync", None)]
        for name, e in enforcers.items():
            kernel.now = name
            for op, *args in ops:
                getattr(e, op)(*(args if op != "sync" else (fed[name],)))
        assert kernel.batches["batches"] == kernel.batches["full"], step
        assert forgotten["batches"] == forgotten["full"], step
    assert len(kernel.batches["full"]) > 100 and forgotten["full"]  # it did test something


def test_a_batch_about_a_remote_container_matches_that_container_alone(kernel, matched):
    reader = Reader()
    e = enforcer()
    e.sync(reader.inputs(records(DB1, DB2, WEB, REMOTE_WEB)))
    assert len(matched) == 4
    moved = attachment("c9", "10.1.5.10", "web", host="h2")
    e.sync(reader.apply([Event("put", KeyValue(moved.key, Attachments.encode(moved), 1, 9, 2))]))
    assert matched[4:] == ["web"]
    e.sync(reader.apply([Event("delete", KeyValue(moved.key, b"", 0, 10, 0))]))
    assert matched[5:] == []
