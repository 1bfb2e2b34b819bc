"""IPAM against both real stores: SQLite in a temp dir and an etcd on loopback
(``store`` in tests/unit/conftest.py; no root needed)."""

from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_address, ip_network

import pytest
from meddling import AnswerLost, BehindTheBack

from netplug.ipam.allocations import (
    IPAM,
    AddressUnavailable,
    IPAMError,
    Pool,
    PoolExhausted,
)
from netplug.ipam.allocator import candidates
from netplug.ipam.schema import Blocks

V4 = Pool(ip_network("10.244.0.0/16"), 24)
V6 = Pool(ip_network("fd00:244::/48"), 64)


def test_allocate_leases_a_block_and_gives_a_gateway_routed_address(store):
    ipam = IPAM(store, "node-1")
    att = ipam.allocate("blue", [V4], "c1", "eth0")
    (a,) = att.allocations
    assert a.block.prefixlen == 24 and a.block.subnet_of(V4.subnet)
    assert a.address.network == a.block  # address carries the block's prefix
    assert a.gateway == a.block.network_address + 1
    assert ipam.host_blocks("blue", V4) == [a.block]


def test_allocation_is_idempotent_per_attachment(store):
    ipam = IPAM(store, "node-1")
    first = ipam.allocate("blue", [V4], "c1", "eth0")
    assert ipam.allocate("blue", [V4], "c1", "eth0") == first
    other = ipam.allocate("blue", [V4], "c1", "eth1")
    assert other.allocations[0].address != first.allocations[0].address


def test_an_attachment_made_again_elsewhere_is_recorded_with_its_new_namespace(store):
    """The same container ID ADDed again without a DEL (podman starting a container
    after a reboot, whose netns died with the machine) keeps its addresses; its
    record names the new namespace and names, which ``netplugctl gc`` and DNS read."""
    ipam = IPAM(store, "node-1")
    first = ipam.allocate("blue", [V4], "c1", "eth0", names=("web",), netns="/run/netns/a")
    again = ipam.allocate("blue", [V4], "c1", "eth0", names=("web2",), netns="/run/netns/b")
    assert again.allocations == first.allocations
    assert (again.netns, again.names) == ("/run/netns/b", ("web2",))
    assert ipam.lookup("blue", "c1", "eth0") == again


def test_dual_stack_gets_one_address_per_family(store):
    att = IPAM(store, "node-1").allocate("blue", [V4, V6], "c1", "eth0")
    assert [a.address.version for a in att.allocations] == [4, 6]
    assert att.allocations[1].address.network.prefixlen == 64


def test_release_frees_everything_and_is_idempotent(store):
    ipam = IPAM(store, "node-1")
    att = ipam.allocate("blue", [V4, V6], "c1", "eth0", names=("web",))
    assert ipam.release("blue", "c1", "eth0") == att
    assert ipam.release("blue", "c1", "eth0") is None
    assert not ipam.has_attachments("blue")
    assert store.range("/netplug/ips/", prefix=True).kvs == []
    # the block stays with its host: blocks are freed only by 'hosts remove'
    assert ipam.host_blocks("blue", V4) == [att.allocations[0].block]


def test_no_address_is_handed_out_twice_under_thread_contention(store):
    ipam = IPAM(store, "node-1")
    with ThreadPoolExecutor(16) as pool:
        atts = list(pool.map(lambda i: ipam.allocate("blue", [V4], f"c{i}", "eth0"), range(200)))
    addresses = [a.allocations[0].address for a in atts]
    assert len(set(addresses)) == 200


def test_full_block_spills_into_a_new_block(store):
    ipam = IPAM(store, "node-1")
    pool = Pool(ip_network("10.9.0.0/24"), 29)  # 5 container addresses per block
    atts = [ipam.allocate("tiny", [pool], f"c{i}", "eth0") for i in range(12)]
    blocks = {a.allocations[0].block for a in atts}
    assert len(blocks) == 3
    assert len({a.allocations[0].address for a in atts}) == 12


def test_exhausted_pool_is_reported(store):
    ipam = IPAM(store, "node-1")
    pool = Pool(ip_network("10.9.0.0/29"), 29)
    for i in range(5):
        ipam.allocate("tiny", [pool], f"c{i}", "eth0")
    assert not ipam.has_room("tiny", pool)
    with pytest.raises(PoolExhausted, match="hosts remove"):
        ipam.allocate("tiny", [pool], "c-extra", "eth0")


def test_hosts_get_distinct_blocks(store):
    a = IPAM(store, "node-a").allocate("blue", [V4], "c1", "eth0").allocations[0]
    b = IPAM(store, "node-b").allocate("blue", [V4], "c2", "eth0").allocations[0]
    assert a.block != b.block


def test_static_address_is_honoured(store):
    ipam = IPAM(store, "node-1")
    att = ipam.allocate("blue", [V4], "c1", "eth0", static=[ip_address("10.244.77.10")])
    assert str(att.allocations[0].address) == "10.244.77.10/24"
    assert ip_network("10.244.77.0/24") in ipam.host_blocks("blue", V4)


@pytest.mark.parametrize(
    ("address", "error", "message"),
    [
        ("10.99.0.5", IPAMError, "outside"),
        ("10.244.77.1", IPAMError, "gateway"),
        ("10.244.77.255", IPAMError, "broadcast"),
        # a family the network has no pool of: once dropped without a word
        ("fd00::5", IPAMError, "fd00::5 is IPv6 and network blue has no IPv6 subnet"),
    ],
)
def test_bad_static_addresses(store, address, error, message):
    with pytest.raises(error, match=message):
        IPAM(store, "node-1").allocate("blue", [V4], "c1", "eth0", static=[ip_address(address)])
    assert store.range("/netplug/attachments/", prefix=True).kvs == []


def test_static_address_in_use_or_in_another_hosts_block(store):
    IPAM(store, "node-1").allocate("blue", [V4], "c1", "eth0", static=[ip_address("10.244.77.10")])
    with pytest.raises(AddressUnavailable, match="in use by container c1"):
        IPAM(store, "node-1").allocate(
            "blue", [V4], "c2", "eth0", static=[ip_address("10.244.77.10")]
        )
    with pytest.raises(AddressUnavailable, match="host node-1 holds"):
        IPAM(store, "node-2").allocate(
            "blue", [V4], "c3", "eth0", static=[ip_address("10.244.77.11")]
        )


def test_attachments_lists_only_this_hosts(store):
    IPAM(store, "node-1").allocate("blue", [V4], "c1", "eth0")
    IPAM(store, "node-2").allocate("blue", [V4], "c2", "eth0")
    listed = IPAM(store, "node-1").attachments("blue")
    assert [(a.container_id, a.ifname) for a in listed] == [("c1", "eth0")]


def test_records_use_the_documented_layout(store):
    att = IPAM(store, "node-1").allocate("blue", [V4], "c1", "eth0", names=("web",))
    a = att.allocations[0]
    # Literal keys and bytes: the layout existing stores hold (see ipam/schema.py).
    record = store.get("/netplug/attachments/blue/node-1/c1/eth0").value
    assert record == (
        b'{"containerID":"c1","ifname":"eth0","ips":[{"address":"%s","block":"%s",'
        b'"gateway":"%s"}],"names":["web"],"netns":""}'
        % (str(a.address).encode(), str(a.block).encode(), str(a.gateway).encode())
    )
    owner = store.get(f"/netplug/ips/blue/{a.block}/{a.address.ip}").value
    assert owner == b'{"containerID":"c1","host":"node-1","ifname":"eth0"}'
    assert store.get(f"/netplug/blocks/blue/{a.block}").value == b'{"host":"node-1"}'


def test_a_remembered_block_taken_away_is_not_used(store):
    ipam = IPAM(store, "node-1")
    first = ipam.allocate("blue", [V4], "c1", "eth0").allocations[0]
    store.delete(Blocks.key("blue", first.block))  # as 'hosts remove' would
    store.put(Blocks.key("blue", first.block), Blocks.encode("node-2"))
    second = ipam.allocate("blue", [V4], "c2", "eth0").allocations[0]
    assert second.block != first.block
    assert ipam.host_blocks("blue", V4) == [second.block]


# A long-lived IPAM (the agent's) remembers which addresses its blocks use; another
# process on the same host (the plugin's in-process fallback, netplug-ipam) may
# allocate or release behind its back. Neither may cost a duplicate or a block.

TINY = Pool(ip_network("10.9.0.0/24"), 29)  # 5 container addresses per block


def test_addresses_taken_behind_a_warm_ipams_back_are_not_handed_out_again(store):
    agent, other = IPAM(store, "node-1"), IPAM(store, "node-1")
    agent.allocate("tiny", [TINY], "c0", "eth0")  # the agent has now seen the block
    taken = {other.allocate("tiny", [TINY], f"o{i}", "eth0") for i in range(3)}
    mine = [agent.allocate("tiny", [TINY], f"c{i}", "eth0") for i in range(1, 5)]
    addresses = [a.allocations[0].address for a in [*taken, *mine]]
    assert len(set(addresses)) == len(addresses) == 7


@pytest.mark.parametrize("released_by", ["another process", "itself"])
def test_a_freed_address_is_used_before_a_new_block(store, released_by):
    agent = IPAM(store, "node-1")
    releaser = IPAM(store, "node-1") if released_by == "another process" else agent
    for i in range(5):  # the block is full, as the agent sees it
        agent.allocate("tiny", [TINY], f"c{i}", "eth0")
    freed = releaser.release("tiny", "c3", "eth0")
    again = agent.allocate("tiny", [TINY], "c-new", "eth0")
    assert again.allocations[0].address == freed.allocations[0].address
    assert len(agent.host_blocks("tiny", TINY)) == 1


def test_a_release_whose_answer_was_lost_leaves_no_stale_view(store):
    """The release was applied but its answer lost (an etcd leader change): release
    finds the record gone and answers None; the warm IPAM must not go on counting
    the freed address as in use (it would never hand it out until the block looked
    full)."""
    lossy = AnswerLost(store)
    agent = IPAM(lossy, "node-1")
    kept = [agent.allocate("tiny", [TINY], f"c{i}", "eth0") for i in range(3)]
    freed = kept[1].allocations[0]
    lossy.lose = 1
    assert agent.release("tiny", "c1", "eth0") is None  # gone: by this call or another
    assert store.get(f"/netplug/ips/tiny/{freed.block}/{freed.address.ip}") is None
    # A container whose hashed slot is the freed address gets it.
    in_use = {k.allocations[0].address.ip for k in kept} - {freed.address.ip}
    ident = next(
        f"n{i}"
        for i in range(1000)
        if next(candidates(freed.block, in_use, f"n{i}/eth0")) == freed.address.ip
    )
    again = agent.allocate("tiny", [TINY], ident, "eth0").allocations[0]
    assert again.address == freed.address


def test_a_block_leased_by_a_parallel_add_is_shared_not_doubled(store):
    """The race CI caught on etcd: no room seen, another ADD leases, then this one reads."""
    other = IPAM(store, "node-1")
    blocks = Blocks.prefix("blue")
    meddling = BehindTheBack(store, blocks, lambda: other.allocate("blue", [V4], "o", "eth0"))
    ipam = IPAM(meddling, "node-1")
    mine = ipam.allocate("blue", [V4], "c1", "eth0").allocations[0]
    theirs = other.lookup("blue", "o", "eth0").allocations[0]
    assert mine.block == theirs.block and mine.address != theirs.address
    assert ipam.host_blocks("blue", V4) == [mine.block]


def test_an_address_freed_just_before_leasing_is_taken_not_a_new_block(store):
    """The block looks full on both passes; a DEL frees an address just before
    the lease's own read of the blocks (the third): that address, no new block."""
    agent, other = IPAM(store, "node-1"), IPAM(store, "node-1")
    for i in range(5):
        agent.allocate("tiny", [TINY], f"c{i}", "eth0")
    freed = []
    meddling = BehindTheBack(
        store,
        Blocks.prefix("tiny"),
        lambda: freed.append(other.release("tiny", "c2", "eth0")),
        after=3,
    )
    late = IPAM(meddling, "node-1")
    again = late.allocate("tiny", [TINY], "c-new", "eth0").allocations[0]
    assert again.address == freed[0].allocations[0].address
    assert len(late.host_blocks("tiny", TINY)) == 1


def test_a_burst_on_a_fresh_host_leases_one_block(store):
    """Many threads of one IPAM (the agent) and separate IPAMs (plugin
    processes without the agent) start at once on a host with no block."""
    ipams = [IPAM(store, "node-1") for _ in range(4)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: ipams[i % 4].allocate("blue", [V4], f"c{i}", "eth0"), range(64)))
    assert len(ipams[0].host_blocks("blue", V4)) == 1
