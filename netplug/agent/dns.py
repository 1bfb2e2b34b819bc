"""netplugd's DNS: the registry's names, answered on each local network's gateway.

One ``DNSServer`` serves every network with a block on this host, on port 53
of each block's gateway address; a query's listener tells the server which
network the client is on, so bare names resolve per network (as aardvark-dns
does). Two parts follow the agent's store view, each on its own feed:
``follow_registry`` keeps the server's snapshot of names in step, and
``follow_listeners`` keeps the listeners on this host's gateways, bound only
once the first snapshot is in: a started agent never answers a name
NXDOMAIN for not having read the registry yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address

from netplug.agent import records
from netplug.agent.records import BadRecords
from netplug.agent.store_view import Feed, Full, mirror
from netplug.dns.metrics import Metrics
from netplug.dns.registry import FOLLOWED, Snapshot
from netplug.dns.resolve import Zone
from netplug.dns.server import DNSServer, Listener
from netplug.dns.upstream import Upstream, default_upstreams
from netplug.ipam.blocks import Network, gateway
from netplug.ipam.store.base import KeyValue

log = logging.getLogger(__name__)

DNS_PORT = 53
REGISTRY = FOLLOWED  # what the registry's feed follows
LISTENERS = (records.BLOCKS,)  # and the listeners'
PART = "dns-listeners"
IDLE = 3600.0  # seconds a part waits on its feed before it looks again (stop wakes it)


def wanted_listeners(
    host: str, blocks: dict[str, dict[Network, str]], port: int = DNS_PORT
) -> list[Listener]:
    """A listener on the gateway of every block ``host`` holds, by network, then
    IPv4 before IPv6, then address (pure; the order only keeps logs and the
    comparison with the last set stable)."""
    return sorted(
        (
            Listener(str(gateway(block)), port, network)
            for network, owners in blocks.items()
            for block, owner in owners.items()
            if owner == host
        ),
        key=_listener_order,
    )


def _listener_order(listener: Listener) -> tuple[str, int, IPv4Address | IPv6Address]:
    # Listener itself has no order: comparing its optional network would raise.
    address = ip_address(listener.host)
    return listener.network or "", address.version, address


class AgentDNS:
    def __init__(
        self,
        host: str,
        domain: str,
        upstreams: list[tuple[str, int]] | None,
        metrics: Metrics,
        port: int = DNS_PORT,
        bad_records: BadRecords | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.upstreams = upstreams
        self.server = DNSServer(Zone(domain), Upstream(upstreams or []), metrics=metrics)
        self.bad_records = bad_records or BadRecords()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wanted: list[Listener] = []
        self._syncing: asyncio.Task | None = None
        # Whether the server has the registry: until then a gateway would answer
        # every container name NXDOMAIN (what a restarted agent did while its
        # first read, 0.4 s at 10,000 names, was being indexed), so none listens.
        self._named = False

    def bind_loop(self) -> None:
        """Serve from the running loop: the parts' threads hand their work to it."""
        self._loop = asyncio.get_running_loop()

    def follow_registry(self, feed: Feed, stop: threading.Event) -> None:
        """Keep the server's snapshot equal to the feed's records (a store view part)."""
        snap = Snapshot()
        while not stop.is_set():
            new = snap
            for update in feed.take(stop, IDLE):
                if isinstance(update, Full):
                    new = Snapshot.build(update.kvs, update.revision)
                else:
                    new = new.apply(update.events)
            if new is not snap:
                snap = new
                self._call(self._publish, snap)

    def follow_listeners(self, feed: Feed, stop: threading.Event) -> None:
        """Listen on the gateway of every block this host holds (a store view part)."""
        blocks: dict[str, KeyValue] = {}  # key -> the block's record
        while not stop.is_set():
            updates = feed.take(stop, IDLE)
            for update in updates:
                mirror(blocks, update)
            if updates:
                bad: records.Bad = {}
                held = records.blocks_by_network(blocks.values(), bad)
                self.bad_records.report(PART, bad)
                self.sync(held)

    def sync(self, blocks: dict[str, dict[Network, str]]) -> None:
        """Listen on exactly this host's gateways (thread-safe; applied on the loop)."""
        wanted = wanted_listeners(self.host, blocks, self.port)
        if wanted != self._wanted:
            self._call(self._apply, wanted)

    def _call(self, fn: Callable, *args: object) -> None:
        assert self._loop is not None, "bind_loop() first"
        with contextlib.suppress(RuntimeError):  # the loop is closed: the agent stops
            self._loop.call_soon_threadsafe(fn, *args)

    def _publish(self, snapshot: Snapshot) -> None:
        """Answer from ``snapshot``; the first one lets the listeners bind (on the loop)."""
        self.server.update(snapshot)
        if not self._named:
            self._named = True
            self._bind_wanted()

    def _apply(self, wanted: list[Listener]) -> None:
        self._wanted = wanted
        if self.upstreams is None:  # default: resolv.conf's, never our own listeners
            self.server.upstream = Upstream(
                default_upstreams((lst.host, lst.port) for lst in wanted)
            )
        self._bind_wanted()

    def _bind_wanted(self) -> None:
        if self._named and (self._syncing is None or self._syncing.done()):
            self._syncing = asyncio.ensure_future(self._bind())

    async def _bind(self) -> None:
        while True:  # until the wanted set stops changing under us
            wanted = self._wanted
            await self.server.set_listeners(wanted)  # logs what it cannot bind
            if wanted == self._wanted:
                return

    async def close(self) -> None:
        await self.server.close()
