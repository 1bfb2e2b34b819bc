"""netplug's lean rtnetlink requests encode exactly what pyroute2's own API would.

pyroute2's ``IPBatch`` compiles a request through the full ``IPRoute`` API
without sending it: the oracle. Only the header's sequence number and port
id may differ (and the peer's MTU/MAC order, which both keep the same).
"""

from ipaddress import ip_interface, ip_network

import pytest
from pyroute2 import IPBatch

from netplug.net.rtnl import Rtnl, VethRequest

HEADER_SEQUENCE_AND_PID = slice(8, 16)


class Captured(Rtnl):
    """An Rtnl that keeps what it would send instead of sending it."""

    def __init__(self) -> None:  # no socket: nothing is sent
        self._sequence = 0
        self.sent: list[bytes] = []

    def request(self, msg, msg_type: int, flags: int) -> None:
        header = msg["header"]
        header["type"], header["flags"] = msg_type, flags
        msg.encode()
        self.sent.append(bytes(msg.data))


def compiled(call) -> bytes:
    batch = IPBatch()
    try:
        call(batch)
        return bytes(batch.batch)
    finally:
        batch.close()


def same_request(ours: bytes, theirs: bytes) -> bool:
    def blank(data: bytes) -> bytes:
        data = bytearray(data)
        data[HEADER_SEQUENCE_AND_PID] = bytes(8)
        return bytes(data)

    return blank(ours) == blank(theirs)


@pytest.fixture
def rt() -> Captured:
    return Captured()


def test_veth_pair_with_its_peer_in_another_namespace(rt):
    rt.add_veth(
        VethRequest("np0123456789abc", 1450, "02:00:00:00:00:01", 7, "eth0", 5, "02:00:00:00:00:02")
    )
    theirs = compiled(
        lambda b: b.link(
            "add",
            ifname="np0123456789abc",
            kind="veth",
            mtu=1450,
            address="02:00:00:00:00:01",
            master=7,
            state="up",
            peer={"ifname": "eth0", "net_ns_fd": 5, "mtu": 1450, "address": "02:00:00:00:00:02"},
        )
    )
    assert same_request(rt.sent[0], theirs)


@pytest.mark.parametrize(
    ("address", "flags", "kwargs"),
    [
        ("10.244.1.5/24", 0, {}),
        ("fd00:1::5/64", 2, {"flags": 2}),
    ],
)
def test_address(rt, address, flags, kwargs):
    interface = ip_interface(address)
    rt.add_address(9, interface, flags)
    theirs = compiled(
        lambda b: b.addr(
            "add",
            index=9,
            address=str(interface.ip),
            prefixlen=interface.network.prefixlen,
            **kwargs,
        )
    )
    assert same_request(rt.sent[0], theirs)


@pytest.mark.parametrize(
    ("dst", "gateway"),
    [("0.0.0.0/0", "10.244.1.1"), ("::/0", "fd00:1::1"), ("10.245.0.0/24", "10.244.1.1")],
)
def test_route(rt, dst, gateway):
    rt.add_route(ip_network(dst), gateway, 9)
    theirs = compiled(lambda b: b.route("add", dst=dst, gateway=gateway, oif=9))
    assert same_request(rt.sent[0], theirs)


@pytest.mark.parametrize(("up", "state"), [(True, "up"), (False, "down")])
def test_link_state(rt, up, state):
    rt.set_up(4, up)
    assert same_request(rt.sent[0], compiled(lambda b: b.link("set", index=4, state=state)))


def test_delete_by_index_and_by_name(rt):
    rt.delete_link(4)
    rt.delete_link(name="np0123456789abc")
    assert same_request(rt.sent[0], compiled(lambda b: b.link("del", index=4)))
    assert same_request(rt.sent[1], compiled(lambda b: b.link("del", ifname="np0123456789abc")))
