"""The host cache: facts are dropped explicitly when they turn out wrong (no root:
the only kernel question, ``link_addresses.held``, is an address dump of one
link of this process's namespace, here the loopback, index 1)."""

from ipaddress import ip_interface

import pytest

from netplug.net.link_addresses import held
from netplug.net.links import Link
from netplug.net.seen import Seen

LOOPBACK = ip_interface("127.0.0.1/8")
LOOPBACK6 = ip_interface("::1/128")
ABSENT = ip_interface("192.0.2.77/24")  # documentation range: on no interface here


def bridge(index: int) -> Link:
    return Link(index, "npbr0", "bridge", "02:00:00:00:00:01", 1500, 0, True)


@pytest.mark.parametrize(
    ("index", "address", "is_held"),
    [
        (1, LOOPBACK, True),
        (1, LOOPBACK6, True),
        (1, ABSENT, False),
        (1, ip_interface("127.0.0.1/32"), False),  # the address, another prefix
        (2**31 - 1, LOOPBACK, False),  # another link (none has this index)
    ],
    ids=["v4-loopback", "v6-loopback", "absent", "other-prefix", "other-link"],
)
def test_held_asks_the_kernel_about_one_link(index, address, is_held):
    assert (address in held(index)) is is_held


def test_an_address_still_on_the_host_is_trusted():
    seen = Seen()
    seen.saw_address(1, LOOPBACK)
    assert seen.missing(1, [LOOPBACK, LOOPBACK6]) == [LOOPBACK6]  # ::1 not put there by us
    assert seen.missing(2, [LOOPBACK]) == [LOOPBACK]  # known on link 1 only


def test_an_address_gone_from_the_host_is_forgotten():
    seen = Seen()
    seen.saw_address(7, ABSENT)
    assert seen.missing(7, [ABSENT]) == [ABSENT]
    assert seen.missing(7, [ABSENT]) == [ABSENT]  # and no longer remembered
    seen.forget_address(7, LOOPBACK)  # forgetting what is not known is fine


def test_a_link_under_a_new_index_takes_its_addresses_with_it():
    seen = Seen()
    seen.saw_link(bridge(7))
    seen.saw_address(7, LOOPBACK)
    seen.saw_link(bridge(9))  # deleted and made again
    assert seen.link("npbr0") == bridge(9)
    assert seen.missing(7, [LOOPBACK]) == [LOOPBACK]


def test_forget_link_and_clear():
    seen = Seen()
    seen.saw_link(bridge(7))
    seen.saw_address(7, LOOPBACK)
    seen.saw_masq("blue", ["10.244.0.0/16"])
    seen.forget_link("npbr0")
    assert seen.link("npbr0") is None and seen.missing(7, [LOOPBACK]) == [LOOPBACK]
    assert seen.masq_subnets("blue") == ["10.244.0.0/16"]
    seen.clear()
    assert seen.masq_subnets("blue") is None
