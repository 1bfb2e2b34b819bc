"""Lean rtnetlink requests for the per-container hot path (ADD and DEL).

pyroute2 0.9's ``IPRoute`` runs every request through an asyncio event loop
of its own and a pipeline of request filters: about 1 ms of CPU per request
on this class of machine, more than the kernel spends on most of them, and
the agent makes five per container. Here pyroute2 stays the codec - its
message classes encode every request and decode every acknowledgement - and
this module only owns the socket: send one message, read its ACK, raise
pyroute2's ``NetlinkError`` on failure. Everything off the hot path (bridge,
VXLAN, peers, CHECK, GC) keeps using ``IPRoute``. ``Channel`` is the socket
part alone, for other netlink families (``conntrack``).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    nlmsgerr,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import NUD_PERMANENT, ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors carry only the request's header, not all of it back
CHANGE = NLM_F_REQUEST | NLM_F_ACK
CREATE = CHANGE | NLM_F_CREATE | NLM_F_EXCL
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4  # what pyroute2 and `ip route add` mark routes with
RTN_UNICAST = 1
RCV_BUFFER = 65536
DUMP_BUFFER = 1 << 20  # a dump's answers come many to a read
NLMSG_ERROR, NLMSG_DONE = 2, 3
HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port

Interface = IPv4Interface | IPv6Interface
Wanted = Callable[[bytes], bool]  # a look at an answer's raw bytes: decode it or not
Network = IPv4Network | IPv6Network


def netlink_socket(option: int, protocol: int = socket.NETLINK_ROUTE) -> socket.socket:
    """A bound netlink socket of ``protocol`` in this thread's namespace, with the
    SOL_NETLINK ``option`` on."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
    try:
        sock.setsockopt(SOL_NETLINK, option, 1)
        sock.bind((0, 0))
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True, slots=True)
class VethRequest:
    """One RTM_NEWLINK for a veth pair: both ends' names, MACs and MTU."""

    name: str
    mtu: int
    mac: str
    master: int  # the bridge's index
    peer: str
    peer_netns: int  # an open fd of the peer's namespace
    peer_mac: str


class Channel:
    """A netlink socket of ``protocol``, bound to the namespace it was created in:
    one request at a time, each answered by its ACK (``request``) or by the
    messages of a dump (``dump``)."""

    def __init__(self, protocol: int = socket.NETLINK_ROUTE, option: int = NETLINK_CAP_ACK) -> None:
        self.sock = netlink_socket(option, protocol)
        self._sequence = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, msg, msg_type: int, flags: int) -> None:
        self._sequence += 1
        header = msg["header"]
        header["type"], header["flags"] = msg_type, flags
        header["sequence_number"] = self._sequence
        msg.encode()
        self.sock.send(msg.data)
        self._await_ack(self._sequence)

    def _await_ack(self, sequence: int) -> None:
        """Raise NetlinkError(errno, kernel's message) unless the ACK says 0.

        Nothing but answers arrives (the socket joins no multicast group), one
        per request; an answer to an older request (its caller gave up on an
        exception while encoding) is skipped by sequence number.
        """
        while True:
            ack = nlmsgerr(self.sock.recv(RCV_BUFFER))
            ack.decode()
            if ack["header"]["sequence_number"] != sequence:
                continue
            code = -ack["error"]
            if code:
                raise NetlinkError(code, os.strerror(code))
            return

    def dump(
        self, msg, request: int, answer: int, decoder: type, wanted: Wanted | None = None
    ) -> Iterator:
        """Send dump request ``msg``; yield its answers of type ``answer``, each
        decoded by ``decoder`` (a pyroute2 message class) as it is read; with
        ``wanted``, only the answers whose raw bytes it keeps (decoding costs
        far more than a look at the bytes)."""
        self._sequence += 1
        header = msg["header"]
        header["type"], header["flags"] = request, NLM_F_REQUEST | NLM_F_DUMP
        header["sequence_number"] = self._sequence
        msg.encode()
        self.sock.send(msg.data)
        return self._answers(self._sequence, answer, decoder, wanted)

    def _answers(
        self, sequence: int, answer: int, decoder: type, wanted: Wanted | None
    ) -> Iterator:
        while True:
            data = self.sock.recv(DUMP_BUFFER)
            offset = 0
            while offset + HEADER.size <= len(data):
                length, kind, _flags, seq, _port = HEADER.unpack_from(data, offset)
                if length < HEADER.size:
                    return  # malformed: nothing more to read in it
                if seq == sequence:
                    if kind == NLMSG_DONE:
                        return
                    if kind == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, offset + HEADER.size)[0]
                        if code:
                            raise NetlinkError(code, os.strerror(code))
                        return
                    raw = data[offset : offset + length]
                    if kind == answer and (wanted is None or wanted(raw)):
                        found = decoder(raw)
                        found.decode()
                        yield found
                offset += (length + 3) & ~3


class Rtnl(Channel):
    """A NETLINK_ROUTE channel: the hot path's link, address, route and neighbour requests."""

    def add_veth(self, pair: VethRequest) -> None:
        """A veth pair: ``pair.name`` up on bridge ``pair.master`` here, its peer
        (down) in the namespace open as fd ``pair.peer_netns`` - born there,
        never seen here. The peer cannot come up in this request: the kernel
        opens it before pairing the two ends and refuses (ENOTCONN)."""
        peer_msg = {
            "attrs": [
                ("IFLA_IFNAME", pair.peer),
                ("IFLA_NET_NS_FD", pair.peer_netns),
                ("IFLA_MTU", pair.mtu),
                ("IFLA_ADDRESS", pair.peer_mac),
            ],
        }
        linkinfo = {
            "attrs": [
                ("IFLA_INFO_KIND", "veth"),
                ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer_msg)]}),
            ]
        }
        msg = ifinfmsg()
        msg["flags"] = msg["change"] = IFF_UP
        msg["attrs"] = [
            ("IFLA_IFNAME", pair.name),
            ("IFLA_MTU", pair.mtu),
            ("IFLA_ADDRESS", pair.mac),
            ("IFLA_MASTER", pair.master),
            ("IFLA_LINKINFO", linkinfo),
        ]
        self.request(msg, RTM_NEWLINK, CREATE)

    def set_up(self, index: int, up: bool = True) -> None:
        msg = ifinfmsg()
        msg["index"], msg["flags"], msg["change"] = index, IFF_UP if up else 0, IFF_UP
        self.request(msg, RTM_NEWLINK, CHANGE)

    def delete_link(self, index: int = 0, name: str = "") -> None:
        """Delete the link with ``index`` (or, when 0, called ``name``)."""
        msg = ifinfmsg()
        msg["index"] = index
        msg["attrs"] = [("IFLA_IFNAME", name)] if not index else []
        self.request(msg, RTM_DELLINK, CHANGE)

    def add_address(self, index: int, address: Interface, flags: int = 0) -> None:
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET if address.version == 4 else socket.AF_INET6
        msg["prefixlen"], msg["index"] = address.network.prefixlen, index
        ip = str(address.ip)
        attrs = [("IFA_ADDRESS", ip)]
        if address.version == 4:
            attrs.append(("IFA_LOCAL", ip))  # the address itself; IFA_ADDRESS is the peer's
        if flags:
            attrs.append(("IFA_FLAGS", flags))
        msg["attrs"] = attrs
        self.request(msg, RTM_NEWADDR, CREATE)

    def add_route(self, dst: Network, gateway: str, index: int) -> None:
        msg = rtmsg()
        msg["family"] = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        msg["dst_len"], msg["table"] = dst.prefixlen, RT_TABLE_MAIN
        msg["proto"], msg["type"] = RTPROT_STATIC, RTN_UNICAST
        attrs = [("RTA_DST", str(dst.network_address))] if dst.prefixlen else []
        msg["attrs"] = [*attrs, ("RTA_GATEWAY", gateway), ("RTA_OIF", index)]
        self.request(msg, RTM_NEWROUTE, CREATE)

    def replace_neighbour(self, index: int, address: str, mac: str) -> None:
        """Link ``index``'s neighbour entry for ``address``: ``mac``, permanent."""
        msg = _neighbour(index, address)
        msg["state"] = NUD_PERMANENT
        msg["attrs"].append(("NDA_LLADDR", mac))
        self.request(msg, RTM_NEWNEIGH, CHANGE | NLM_F_CREATE | NLM_F_REPLACE)

    def delete_neighbour(self, index: int, address: str) -> None:
        """Delete link ``index``'s neighbour entry for ``address`` (ENOENT: none)."""
        self.request(_neighbour(index, address), RTM_DELNEIGH, CHANGE)


def _neighbour(index: int, address: str) -> ndmsg:
    msg = ndmsg()
    msg["family"] = socket.AF_INET6 if ":" in address else socket.AF_INET
    msg["ifindex"] = index
    msg["attrs"] = [("NDA_DST", address)]
    return msg
