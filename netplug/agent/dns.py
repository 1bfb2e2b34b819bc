"""netplugd's DNS: the registry's names, answered on each local network's gateway.

One ``DNSServer`` serves every network with a block on this host, on port 53
of each block's gateway address; a query's listener tells the server which
network the client is on, so bare names resolve per network (as aardvark-dns
does). The listeners follow the store: the overlay's reconcile hands every
fresh view of the blocks to ``sync`` (from its thread).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address

from netplug.dns.follow import Follower, Spawn
from netplug.dns.metrics import Metrics
from netplug.dns.resolve import Zone
from netplug.dns.server import DNSServer, Listener
from netplug.dns.upstream import Upstream, default_upstreams
from netplug.ipam.blocks import Network, gateway
from netplug.ipam.store.base import Event

log = logging.getLogger(__name__)

DNS_PORT = 53


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
        store,
        host: str,
        domain: str,
        upstreams: list[tuple[str, int]] | None,
        metrics: Metrics,
        port: int = DNS_PORT,
        on_batch: Callable[[list[Event] | None], None] | None = None,
        trust: Callable[[], object] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.upstreams = upstreams
        self.server = DNSServer(Zone(domain), Upstream(upstreams or []), metrics=metrics)
        self.follower = Follower(
            store,
            self.server.update,
            on_status=lambda up: metrics.store_up.set(int(up)),
            on_batch=on_batch,
            trust=trust,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wanted: list[Listener] = []
        self._syncing: asyncio.Task | None = None

    async def start(self, spawn: Spawn | None = None) -> None:
        """Follow the store (in the thread ``spawn`` runs, if given; see Follower)."""
        self._loop = asyncio.get_running_loop()
        await self.follower.start(spawn)

    def sync(self, blocks: dict[str, dict[Network, str]]) -> None:
        """Listen on exactly this host's gateways (thread-safe; applied on the loop)."""
        wanted = wanted_listeners(self.host, blocks, self.port)
        if self._loop is not None and wanted != self._wanted:
            self._loop.call_soon_threadsafe(self._apply, wanted)

    def _apply(self, wanted: list[Listener]) -> None:
        self._wanted = wanted
        if self.upstreams is None:  # default: resolv.conf's, never our own listeners
            self.server.upstream = Upstream(
                default_upstreams((lst.host, lst.port) for lst in wanted)
            )
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.ensure_future(self._bind())

    async def _bind(self) -> None:
        while True:  # until the wanted set stops changing under us
            wanted = self._wanted
            await self.server.set_listeners(wanted)  # logs what it cannot bind
            if wanted == self._wanted:
                return

    async def close(self) -> None:
        await self.server.close()
        await self.follower.stop()
