"""The host cache: facts are dropped explicitly when they turn out wrong (no root:
the only kernel question, ``link_addresses.holds``, is an address dump of one
link of this process's namespace, here the loopback, index 1)."""

import struct
from ipaddress import ip_interface

import pytest

from netplug.net.link_addresses import IFA_ADDRESS, IFA_LOCAL, decode, holds
from netplug.net.links import Link
from netplug.net.seen import Seen

LOOPBACK = ip_interface("127.0.0.1/8")
ABSENT = ip_interface("192.0.2.77/24")  # documentation range: on no interface here


def bridge(index: int) -> Link:
    return Link(index, "npbr0", "bridge", "02:00:00:00:00:01", 1500, 0, True)


@pytest.mark.parametrize(
    ("index", "address", "held"),
    [
        (1, LOOPBACK, True),
        (1, ip_interface("::1/128"), True),
        (1, ABSENT, False),
        (1, ip_interface("127.0.0.1/32"), False),  # the address, another prefix
        (2**31 - 1, LOOPBACK, False),  # another link (none has this index)
    ],
    ids=["v4-loopback", "v6-loopback", "absent", "other-prefix", "other-link"],
)
def test_holds_asks_the_kernel_about_one_link(index, address, held):
    assert holds(index, address) is held


def message(kind: int, flags: int = 0, index: int = 0, prefix: int = 0, attrs=()) -> bytes:
    """One netlink message of an address dump, as the kernel lays it out."""
    body = b""
    if kind == 20:  # RTM_NEWADDR
        body = struct.pack("=BBBBI", 2, prefix, 0, 0, index)
        for attr, value in attrs:
            size = 4 + len(value)
            body += struct.pack("=HH", size, attr) + value + b"\0" * (-size % 4)
    elif kind == 2:  # NLMSG_ERROR
        body = struct.pack("=i", -19)
    return struct.pack("=IHHII", 16 + len(body), kind, flags, 1, 0) + body


GATEWAY = bytes([10, 1, 0, 1])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (message(3), (True, set(), True)),
        (
            message(20, index=5, prefix=24, attrs=[(IFA_ADDRESS, GATEWAY), (IFA_LOCAL, GATEWAY)])
            + message(20, index=6, prefix=24, attrs=[(IFA_LOCAL, bytes(4))])
            + message(3),
            (True, {(GATEWAY, 24)}, True),
        ),
        (
            message(20, index=5, prefix=64, attrs=[(IFA_ADDRESS, bytes(16))]),
            (False, {(bytes(16), 64)}, True),
        ),
        (message(20, flags=0x10, index=5) + message(3), (True, set(), False)),
    ],
    ids=["empty", "v4-local-other-links-left-out", "v6-address-not-done", "interrupted"],
)
def test_decode_an_address_dump(data, expected):
    assert decode(data, 5) == expected


def test_an_error_message_is_an_oserror():
    with pytest.raises(OSError, match="address dump refused"):
        decode(message(2), 5)


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
