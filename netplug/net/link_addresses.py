"""Whether a link holds an address with its prefix: one RTM_GETADDR dump that
the kernel filters to that link (NETLINK_GET_STRICT_CHK), over a plain
netlink socket, decoded here with ``struct``.

A bind(2) would be cheaper still, but it only says "assigned somewhere in
the namespace": it passes for the address on another link or with another
prefix, and always under ``ip_nonlocal_bind``. pyroute2's ``get_addr`` costs
about 0.7 ms a call, this about 20 us (the kernel walks one link's addresses;
nothing is decoded but the few messages of that link). Standard library only:
``seen.py`` uses it, and netplug-ipam's start-up path holds a ``Seen``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from ipaddress import IPv4Interface, IPv6Interface

Interface = IPv4Interface | IPv6Interface

SOL_NETLINK = 270
NETLINK_GET_STRICT_CHK = 12  # Linux 4.20: dump filters (here ifa_index) are honoured
RTM_GETADDR = 22
NLM_F_REQUEST, NLM_F_DUMP, NLM_F_DUMP_INTR = 0x1, 0x300, 0x10
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
ATTR = struct.Struct("=HH")  # rtattr: length, type
ERRNO = struct.Struct("=i")
RECV_SIZE = 65536
TIMEOUT = 2.0  # the kernel answers at once; a bound all the same


def holds(index: int, address: Interface) -> bool:
    """Whether link ``index`` of this thread's namespace holds ``address`` with its
    prefix length. Raises OSError when netlink refuses the dump."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    wanted = (address.ip.packed, address.network.prefixlen)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC) as sock:
        with contextlib.suppress(OSError):  # an older kernel dumps every link's: filtered below
            sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        sock.settimeout(TIMEOUT)
        flags = NLM_F_REQUEST | NLM_F_DUMP
        request = HEADER.pack(HEADER.size + IFADDR.size, RTM_GETADDR, flags, 1, 0)
        sock.send(request + IFADDR.pack(family, 0, 0, 0, index))
        found, consistent = False, True
        while True:
            done, pairs, complete = decode(sock.recv(RECV_SIZE), index)
            found, consistent = found or wanted in pairs, consistent and complete
            if done:  # an inconsistent dump counts as "not held": adding again is harmless
                return found and consistent


def decode(data: bytes, index: int) -> tuple[bool, set[tuple[bytes, int]], bool]:
    """One datagram of an address dump: (whether it ends the dump, the (packed
    address, prefix length) pairs of link ``index`` in it, whether the kernel
    says the dump was consistent). Raises OSError for an error message."""
    found: set[tuple[bytes, int]] = set()
    offset, complete = 0, True
    while offset + HEADER.size <= len(data):
        length, kind, flags, _sequence, _port = HEADER.unpack_from(data, offset)
        if length < HEADER.size:
            break
        body, end = offset + HEADER.size, offset + length
        complete = complete and not flags & NLM_F_DUMP_INTR  # addresses changed meanwhile
        if kind == NLMSG_DONE:
            return True, found, complete
        if kind == NLMSG_ERROR:
            code = -ERRNO.unpack_from(data, body)[0]
            raise OSError(code, f"address dump refused: {code}")
        _family, prefixlen, _flags, _scope, link = IFADDR.unpack_from(data, body)
        if link == index:
            attrs = _attributes(data, body + IFADDR.size, end)
            packed = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)  # LOCAL: IPv4's own
            if packed:
                found.add((packed, prefixlen))
        offset += (length + 3) & ~3
    return False, found, complete


def _attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    attrs = {}
    while offset + ATTR.size <= end:
        length, kind = ATTR.unpack_from(data, offset)
        if length < ATTR.size:
            break
        attrs[kind] = data[offset + ATTR.size : offset + length]
        offset += (length + 3) & ~3
    return attrs
