"""DEL goes on once the kernel has unlisted the veth: the notification parser,
and ``unlink.delete``'s answers when the request answers first."""

from __future__ import annotations

import socket
import threading

import pytest
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWLINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from netplug.net import NetError, unlink

AF_BRIDGE = 7
NO_SUCH_LINK = 2**31 - 1  # no notification ever names it


def message(kind: int, index: int, family: int = socket.AF_UNSPEC, name: str = "vethx") -> bytes:
    msg = ifinfmsg()
    msg["family"], msg["index"] = family, index
    msg["attrs"] = [("IFLA_IFNAME", name)]
    msg["header"]["type"] = kind
    msg.encode()
    return bytes(msg.data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (message(RTM_DELLINK, 7), True),
        (message(RTM_DELLINK, 8), False),
        (message(RTM_NEWLINK, 7), False),
        # The bridge tells of its port going before the link itself is unlisted.
        (message(RTM_DELLINK, 7, family=AF_BRIDGE), False),
        (message(RTM_NEWLINK, 3) + message(RTM_DELLINK, 8) + message(RTM_DELLINK, 7), True),
        (message(RTM_DELLINK, 7)[:20], False),  # truncated: no ifinfomsg to read
        (b"\x00" * 40, False),  # a zero length frames nothing
        (b"", False),
    ],
    ids=[
        "dellink",
        "other-link",
        "newlink",
        "bridge-port",
        "third-in-batch",
        "truncated",
        "zero-length",
        "empty",
    ],
)
def test_unlisted_finds_the_links_own_dellink(data: bytes, expected: bool):
    assert unlink.unlisted(data, 7) is expected


def test_without_the_link_here_the_request_just_runs():
    assert unlink.delete(lambda: False, None, 1.0) is False


def test_the_requests_answer_when_it_comes_first():
    assert unlink.delete(lambda: False, NO_SUCH_LINK, 5.0) is False
    assert unlink.delete(lambda: True, NO_SUCH_LINK, 5.0) is True


def test_the_requests_error_when_it_comes_first():
    def refused() -> bool:
        raise NetError("refused")

    with pytest.raises(NetError, match="refused"):
        unlink.delete(refused, NO_SUCH_LINK, 5.0)


def test_neither_within_the_timeout_is_an_error():
    release = threading.Event()
    try:
        with pytest.raises(NetError, match="took longer than"):
            unlink.delete(lambda: release.wait(10), NO_SUCH_LINK, 0.2)
    finally:
        release.set()
