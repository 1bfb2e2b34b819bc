"""Forwarding: names that are not ours go to the upstream resolvers.

Each forwarded query goes out from a fresh UDP socket (a new random source
port) with a fresh random ID, and only a reply from that server, with that ID
and the same question, is taken: an off-path attacker has to guess both. A
truncated (TC) reply is asked again over TCP. Upstreams are tried in order,
sharing one time budget (2 s by default); a SERVFAIL or REFUSED is kept only
if no later upstream does better. The caller turns ``None`` into SERVFAIL.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable, Sequence
from ipaddress import ip_address

from netplug.dns.resolve import Forward

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 2.0
RESOLV_CONF = "/etc/resolv.conf"
_SERVFAIL, _REFUSED = 2, 5


class _OneReply(asyncio.DatagramProtocol):
    """Resolves ``future`` with the first datagram that answers the query."""

    def __init__(self, qid: bytes, question: bytes) -> None:
        self.qid, self.question = qid, question.lower()
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.future.done() and _answers(data, self.qid, self.question):
            self.future.set_result(data)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable: fail at once
        if not self.future.done():
            self.future.set_exception(exc)


def _answers(data: bytes, qid: bytes, question: bytes) -> bool:
    return (
        len(data) >= 12 + len(question)
        and data[:2] == qid
        and data[2] & 0x80 != 0
        and data[12 : 12 + len(question)].lower() == question
    )


class Upstream:
    """The upstream resolvers, ``[(host, port), ...]``, tried in order."""

    def __init__(self, servers: Sequence[tuple[str, int]], budget: float = DEFAULT_BUDGET) -> None:
        self.servers = tuple(servers)
        self.budget = budget

    async def forward(self, fwd: Forward) -> tuple[bytes | None, str]:
        """The upstream's reply with the client's ID, and the outcome: "ok",
        "tcp" (asked again over TCP after TC) or "failed" (reply None)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget
        fallback: tuple[bytes | None, str] = (None, "failed")
        for i, server in enumerate(self.servers):
            left = deadline - loop.time()
            if left <= 0:
                break
            qid = secrets.token_bytes(2)
            wire = qid + fwd.wire[2:]
            outcome = "ok"
            try:
                reply = await asyncio.wait_for(
                    self._udp(server, wire, qid, fwd.question), left / (len(self.servers) - i)
                )
                if reply[2] & 0x02:
                    outcome = "tcp"
                    left = deadline - loop.time()
                    reply = await asyncio.wait_for(self._tcp(server, wire, qid, fwd.question), left)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                log.debug("upstream %s:%d: %r", *server, e)
                continue
            answer = fwd.wire[:2] + reply[2:]
            if reply[3] & 0xF in (_SERVFAIL, _REFUSED):
                fallback = (answer, outcome)
                continue
            return answer, outcome
        return fallback

    @staticmethod
    async def _udp(server: tuple[str, int], wire: bytes, qid: bytes, question: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _OneReply(qid, question), remote_addr=server
        )
        try:
            transport.sendto(wire)
            return await proto.future
        finally:
            transport.close()

    @staticmethod
    async def _tcp(server: tuple[str, int], wire: bytes, qid: bytes, question: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(*server)
        try:
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
            size = int.from_bytes(await reader.readexactly(2), "big")
            reply = await reader.readexactly(size)
        finally:
            writer.close()
        if not _answers(reply, qid, question.lower()):
            raise ValueError("the TCP reply does not answer the query")
        return reply


def default_upstreams(ours: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """resolv.conf's nameservers, minus `ours`, the addresses this process answers on
    (forwarding to ourselves would loop: ``is_ours``)."""
    try:
        with open(RESOLV_CONF) as f:
            servers = resolv_conf_servers(f.read())
    except OSError as e:
        log.warning("cannot read %s: %s", RESOLV_CONF, e)
        return []
    ours = list(ours)
    return [s for s in servers if not is_ours(s, ours)]


def is_ours(server: tuple[str, int], ours: Iterable[tuple[str, int]]) -> bool:
    """Whether ``server`` is one of ``ours``, the addresses this process listens on:
    the same address and port, or a loopback address on the port of a listener on
    every address (0.0.0.0, ::) of its family. Sure only of those: a wildcard
    listener holds the host's other addresses too, which only the kernel knows."""
    try:
        address, port = ip_address(server[0].split("%")[0]), server[1]
    except ValueError:  # not an address (a name in resolv.conf): not one of ours
        return False
    for host, our_port in ours:
        mine = ip_address(host.split("%")[0])
        if our_port != port or mine.version != address.version:
            continue
        if mine == address or (mine.is_unspecified and address.is_loopback):
            return True
    return False


def resolv_conf_servers(text: str) -> list[tuple[str, int]]:
    """The ``nameserver`` entries of a resolv.conf, on port 53."""
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            found.append((parts[1], 53))
    return found
