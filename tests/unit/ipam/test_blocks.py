from ipaddress import ip_address, ip_network

import pytest

from netplug.ipam.allocator import candidates, is_usable
from netplug.ipam.blocks import (
    block_at,
    block_count,
    block_of,
    choose_free_block,
    gateway,
    last_usable,
)

SUBNET = ip_network("10.244.0.0/16")
SUBNET6 = ip_network("fd00:244::/48")


def test_blocks_cut_the_subnet_in_order():
    assert block_count(SUBNET, 24) == 256
    assert block_at(SUBNET, 24, 0) == ip_network("10.244.0.0/24")
    assert block_at(SUBNET, 24, 255) == ip_network("10.244.255.0/24")
    assert block_at(SUBNET6, 64, 3) == ip_network("fd00:244:0:3::/64")


@pytest.mark.parametrize(
    ("address", "block"),
    [("10.244.7.9", "10.244.7.0/24"), ("10.244.0.0", "10.244.0.0/24"), ("10.245.0.1", None)],
)
def test_block_of(address, block):
    found = block_of(SUBNET, 24, ip_address(address))
    assert found == (ip_network(block) if block else None)


def test_free_block_search_starts_at_the_host_hash_and_skips_taken_ones():
    first = choose_free_block(SUBNET, 24, set(), "node-1")
    assert first is not None and first.subnet_of(SUBNET)
    assert choose_free_block(SUBNET, 24, set(), "node-1") == first  # stable
    second = choose_free_block(SUBNET, 24, {first}, "node-1")
    assert second not in (None, first)


def test_hosts_start_on_different_blocks():
    starts = {choose_free_block(SUBNET, 24, set(), f"node-{i}") for i in range(8)}
    assert len(starts) >= 6  # hashed, so near-distinct: few CAS collisions


def test_full_subnet_has_no_free_block():
    small = ip_network("10.9.0.0/23")
    both = {ip_network("10.9.0.0/24"), ip_network("10.9.1.0/24")}
    assert choose_free_block(small, 24, both, "node-1") is None


def test_gateway_and_usable_range():
    block = ip_network("10.244.3.0/24")
    assert gateway(block) == ip_address("10.244.3.1")
    assert last_usable(block) == 254  # .255 is broadcast
    assert not is_usable(block, ip_address("10.244.3.1"))
    assert not is_usable(block, ip_address("10.244.3.255"))
    assert is_usable(block, ip_address("10.244.3.2"))
    assert is_usable(block, ip_address("10.244.3.254"))


def test_candidates_cover_every_free_address_exactly_once():
    block = ip_network("10.244.3.0/28")
    used = {ip_address("10.244.3.5"), ip_address("10.244.3.9")}
    found = list(candidates(block, used, "c1/eth0"))
    expected = {block.network_address + i for i in range(2, 15)} - used
    assert sorted(found) == sorted(expected)


def test_candidates_start_differs_between_attachments():
    block = ip_network("10.244.3.0/24")
    firsts = {next(candidates(block, set(), f"c{i}/eth0")) for i in range(20)}
    assert len(firsts) >= 15  # spread: parallel ADDs rarely race for one address


def test_full_block_has_no_candidates():
    block = ip_network("10.244.3.0/30")  # only .2 is a container address
    assert list(candidates(block, {ip_address("10.244.3.2")}, "x")) == []
