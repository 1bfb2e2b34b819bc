"""The host cache: facts are dropped explicitly when they turn out wrong (no root:
the only kernel question, ``is_local``, is a bind(2) in this process's namespace)."""

from ipaddress import ip_interface

import pytest

from netplug.net.links import Link
from netplug.net.seen import Seen, is_local

LOOPBACK = ip_interface("127.0.0.1/8")
ABSENT = ip_interface("192.0.2.77/24")  # documentation range: on no interface here


def bridge(index: int) -> Link:
    return Link(index, "npbr0", "bridge", "02:00:00:00:00:01", 1500, 0, True)


@pytest.mark.parametrize(
    ("address", "local"),
    [(LOOPBACK, True), (ip_interface("::1/128"), True), (ABSENT, False)],
    ids=["v4-loopback", "v6-loopback", "absent"],
)
def test_is_local_asks_the_kernel(address, local):
    assert is_local(address) is local


def test_an_address_still_on_the_host_is_trusted():
    seen = Seen()
    seen.saw_address(1, LOOPBACK)
    assert seen.has_address(1, LOOPBACK)
    assert not seen.has_address(2, LOOPBACK)  # known on link 1 only


def test_an_address_gone_from_the_host_is_forgotten():
    seen = Seen()
    seen.saw_address(7, ABSENT)
    assert not seen.has_address(7, ABSENT)
    seen.forget_address(7, LOOPBACK)  # forgetting what is not known is fine


def test_a_link_under_a_new_index_takes_its_addresses_with_it():
    seen = Seen()
    seen.saw_link(bridge(7))
    seen.saw_address(7, LOOPBACK)
    seen.saw_link(bridge(9))  # deleted and made again
    assert seen.link("npbr0") == bridge(9)
    assert not seen.has_address(7, LOOPBACK)


def test_forget_link_and_clear():
    seen = Seen()
    seen.saw_link(bridge(7))
    seen.saw_address(7, LOOPBACK)
    seen.saw_masq("blue", ["10.244.0.0/16"])
    seen.forget_link("npbr0")
    assert seen.link("npbr0") is None and not seen.has_address(7, LOOPBACK)
    assert seen.masq_subnets("blue") == ["10.244.0.0/16"]
    seen.clear()
    assert seen.masq_subnets("blue") is None
