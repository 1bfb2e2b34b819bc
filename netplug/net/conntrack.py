"""Deleting the conntrack entries of addresses whose owner went or changed.

netplug's table keeps an established connection's verdict in its ct mark
until the rules change (``netplug.policy.plan``); a container leaving changes
set elements only. An entry outlives its container, so a new container on the
same address (a full host hands it out again at once) would continue it under
the old verdict, and a UDP flow its sender keeps refreshing never times out.
As Calico's Felix and kube-proxy do, the entries of such an address are
deleted: DEL deletes its container's, each host's enforcer those of a remote
address that left, or changed owner in, one of its sets. Only the host
namespace's table matters: netplug's rules live there, and a container's
namespace (if it tracks connections at all) goes with the container.

``forget`` deletes the entries whose original or reply tuple has the address
as source or destination (a connection DNAT'd to the container holds it only
in the reply tuple):

- IPv4: one IPCTNL_MSG_CT_DELETE with a CTA_FILTER per tuple field; Linux >=
  6.12 applies the filter to the flush itself, one walk of the table in the
  kernel and nothing copied out (0.55 ms of CPU for the four requests here).
- IPv6, and IPv4 on an older kernel (which refuses a partial tuple, EINVAL):
  the family's entries are dumped and matched here, and each match deleted by
  its original tuple (all read before the first deletion). The kernel's filter
  cannot be used for IPv6: up to at least 6.18 it compares IPv6 addresses
  inverted (``!ipv6_addr_cmp``, true when they are *equal*), so a filtered
  flush deletes every *other* entry. Only the entries whose raw bytes hold
  the address are decoded (pyroute2 takes 0.1-0.7 ms an entry; 1000 IPv6
  entries made DEL 0.5-1 s slower before this look).

pyroute2 is the codec (``nfct_msg``, ``NFCTAttrTuple``); requests and dumps go
through ``rtnl.Channel``, a socket of our own, as the hot path's rtnetlink
requests do: through pyroute2's ``NFCTSocket`` (its event loop) the four IPv4
requests cost 1.9 ms of CPU against 0.55 ms, and a socket made for a dump 6 ms.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address

from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_CTNETLINK
from pyroute2.netlink.nfnetlink.nfctsocket import (
    IPCTNL_MSG_CT_DELETE,
    IPCTNL_MSG_CT_GET,
    IPCTNL_MSG_CT_NEW,
    NFCTAttrTuple,
    nfct_msg,
)

from netplug import faults
from netplug.net import NetError
from netplug.net.rtnl import Channel

log = logging.getLogger(__name__)

Address = IPv4Address | IPv6Address
NETLINK_NETFILTER = 12
DELETE, GET, NEW = (
    NFNL_SUBSYS_CTNETLINK << 8 | t
    for t in (IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_NEW)
)
FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
FIELDS = (("orig", "saddr"), ("orig", "daddr"), ("reply", "saddr"), ("reply", "daddr"))
TUPLES = ("CTA_TUPLE_ORIG", "CTA_TUPLE_REPLY")
IP_ATTRS = {4: ("CTA_IP_V4_SRC", "CTA_IP_V4_DST"), 6: ("CTA_IP_V6_SRC", "CTA_IP_V6_DST")}
TIMEOUT = 2.0  # seconds one request may take (a walk of the whole table)
REFUSED = (errno.EINVAL, errno.EOPNOTSUPP)  # a kernel that cannot filter a flush
WAIT = 5.0  # seconds an ADD waits for its addresses' pending deletion (``Deleter``)


def forget(addresses: Iterable[Address]) -> None:
    """Delete every conntrack entry of this thread's namespace whose original or
    reply tuple has one of ``addresses`` as its source or destination. Raises
    NetError (callers log it: a stale entry must not fail a DEL)."""
    by_version: dict[int, list[Address]] = {4: [], 6: []}
    for a in addresses:
        by_version[a.version].append(a)
    if not by_version[4] and not by_version[6]:
        return
    try:
        faults.check("conntrack", NetError)
        channel = Channel(NETLINK_NETFILTER)
        channel.sock.settimeout(TIMEOUT)
    except OSError as e:
        raise NetError(f"cannot open a conntrack netlink socket: {e}") from e
    try:
        dumped = [6] if by_version[6] else []
        try:
            for address in by_version[4]:
                for where, field in FIELDS:
                    _flush(channel, address, where, field)
        except NetlinkError as e:
            if e.code not in REFUSED:
                raise
            dumped.insert(0, 4)  # a kernel before 6.12
        for version in dumped:
            delete_dumped(channel, version, by_version[version])
    except (NetlinkError, OSError) as e:  # OSError: a timeout, ENOBUFS
        raise NetError(f"deleting conntrack entries failed: {e}") from e
    finally:
        channel.close()


def _flush(channel: Channel, address: Address, where: str, field: str) -> None:
    """One filtered flush: the entries whose ``where`` tuple has ``address`` as ``field``."""
    match = NFCTAttrTuple(family=FAMILY[address.version], **{field: str(address)})
    match.attrs()  # computes match.flags: which fields the filter compares
    msg = nfct_msg.create_from(
        **{f"tuple_{where}": match},
        cta_filter={"attrs": [[f"CTA_FILTER_{where.upper()}_FLAGS", match.flags]]},
    )
    msg["nfgen_family"] = FAMILY[address.version]
    channel.request(msg, DELETE, NLM_F_REQUEST | NLM_F_ACK)


def delete_dumped(channel: Channel, version: int, addresses: list[Address]) -> int:
    """Dump the entries of IP ``version``, delete those involving ``addresses``
    (each by its original tuple, through ``channel``); how many were deleted."""
    wanted = {str(a) for a in addresses}
    packed = [a.packed for a in addresses]
    request = nfct_msg()
    request["nfgen_family"] = FAMILY[version]
    # Only an entry whose bytes hold an address's is decoded (and then checked).
    dumped = channel.dump(request, GET, NEW, nfct_msg, lambda raw: any(p in raw for p in packed))
    # Read to its end (a dump left half read would answer the next request).
    doomed = [entry for entry in dumped if _involves(entry, version, wanted)]
    deleted, refused = 0, []
    for entry in doomed:
        msg = nfct_msg.create_from(
            tuple_orig=NFCTAttrTuple.from_netlink(FAMILY[version], entry.get_attr(TUPLES[0])),
            zone=entry.get_attr("CTA_ZONE"),
        )
        msg["nfgen_family"] = FAMILY[version]
        try:
            channel.request(msg, DELETE, NLM_F_REQUEST | NLM_F_ACK)
            deleted += 1
        except NetlinkError as e:
            # ENOENT: gone meanwhile. Another refusal (a protocol whose tuple
            # pyroute2 does not carry whole, SCTP say) must not spare the rest.
            if e.code != errno.ENOENT:
                refused.append(e)
    if refused:
        raise refused[0]
    return deleted


def _involves(entry: nfct_msg, version: int, wanted: set[str]) -> bool:
    for name in TUPLES:
        ips = entry.get_attr(name).get_attr("CTA_TUPLE_IP")
        for attr in IP_ATTRS[version]:
            if str(ip_address(ips.get_attr(attr))) in wanted:
                return True
    return False


def forget_or_log(addresses: Iterable[Address], why: str) -> None:
    """``forget``, logging a failure instead of raising it: a stale entry must not
    fail the DEL or the table's update that found it (``why``: which one)."""
    todo = list(addresses)
    try:
        forget(todo)
    except Exception as e:  # NetError, or a bug (a message pyroute2 cannot decode)
        shown = ", ".join(map(str, todo))
        log.warning(
            "%s: conntrack entries of %s not deleted: %s",
            why,
            shown,
            e,
            exc_info=not isinstance(e, NetError),
        )


class Deleter:
    """Deletions off the caller's path (the agent's DEL and enforcer): ``submit``
    returns at once and one thread deletes, the addresses of many submissions in
    one round (an IPv6 dump walks the whole table: a burst of DELs pays it once).
    ``wait`` returns once the given addresses' deletions are done: an ADD that
    gets one of them waits for it, so no container ever meets its predecessor's
    entries. Made in the thread whose namespace it deletes in (a new thread
    starts in its creator's)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._todo: dict[Address, str] = {}  # address -> why (the first asker)
        self._busy: set[Address] = set()  # being deleted now
        self._go = False  # whether a round may start (``go``)
        threading.Thread(target=self._run, name="conntrack", daemon=True).start()

    def submit(self, addresses: Iterable[Address], why: str, start: bool = True) -> None:
        """Queue ``addresses``; pending from now on (``wait``). With ``start``
        False the round waits for ``go`` (a DEL's own steps first), or for
        anyone else's start."""
        with self._cond:
            for a in addresses:
                self._todo.setdefault(a, why)
            self._go = self._go or start
            self._cond.notify_all()

    def go(self) -> None:
        """Start the round of what is queued (nothing queued: the next ``submit``
        with ``start`` False waits for its own ``go``)."""
        with self._cond:
            self._go = bool(self._todo)
            self._cond.notify_all()

    def wait(self, addresses: Iterable[Address], timeout: float = WAIT) -> bool:
        """Whether no deletion of ``addresses`` is pending (waiting up to ``timeout``)."""
        wanted = set(addresses)
        with self._cond:
            return self._cond.wait_for(
                lambda: not wanted & (self._todo.keys() | self._busy), timeout
            )

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._todo) and self._go)
                batch, self._todo, self._go = self._todo, {}, False
                self._busy = set(batch)
            try:
                forget_or_log(batch, "; ".join(sorted(set(batch.values()))))
            except Exception:  # a bug must cost one round, not the thread
                log.exception("conntrack: deleting entries failed")
            with self._cond:
                self._busy = set()
                self._cond.notify_all()
