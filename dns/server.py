"""The DNS server: UDP listeners on threads, TCP on asyncio, around the pure resolver.

A query's path:

1. hot: the packed-answer cache (``cache``), keyed by the query's bytes
   after the ID and its scope; a hit costs a dict lookup and one copy (over
   UDP into the batch's slot, see ``udp``), no parsing;
2. cold: ``resolve.resolve`` over the current snapshot; the reply is cached
   unless it is an error for unreadable input;
3. forward: names that are not ours go to ``upstream``; the reply is cut
   down to TC if it exceeds what the client accepts, or SERVFAIL when every
   upstream fails within the budget.

The server owns its listeners and its current snapshot, nothing else: the
registry follower (``follow``) hands it new snapshots with ``update`` (on the
event loop), and whoever embeds it (``netplug-dns``, ``netplugd``) adds and
removes listeners at run time. Each UDP listener is served by a thread of its
own (``udp``); TCP, forwarding and everything else run on the event loop. A
listener is ``(host, port, network)``: queries that arrive on it are from
clients of ``network``, for whom bare container names resolve (as
aardvark-dns does); ``None`` for none.

Nothing a client sends can stop it: the resolver never raises, the handlers
catch what sockets throw, and TCP connections are bounded per client and in
all, and closed when idle or slow (``slots``, ``TCP_*``), so that one client
holding many connections cannot shut the others out.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from time import perf_counter
from typing import NamedTuple

from netplug.dns.cache import AnswerCache
from netplug.dns.metrics import Metrics, Tally, tag
from netplug.dns.registry import Snapshot
from netplug.dns.resolve import Forward, Zone, fit, formerr, resolve, servfail
from netplug.dns.slots import Slots
from netplug.dns.udp import UDPListener
from netplug.dns.upstream import Upstream

log = logging.getLogger(__name__)

FORMERR = 1
# TCP limits (RFC 7766 6.2.3: idle timeouts of a few seconds; CoreDNS and dnsmasq
# keep theirs in that range). ``slots`` says which connection goes when one is over.
TCP_IDLE = 5.0  # seconds a TCP client may keep a connection open between queries
TCP_IO = 3.0  # seconds for the rest of a message to arrive, or a reply to leave
TCP_PER_CLIENT = 16  # connections one source address holds, all listeners together
MAX_TCP = 256  # connections in all (each is a file descriptor; systemd's soft limit is 1024)
MAX_FORWARDS = 1024  # forwarded queries in flight; past this the answer is SERVFAIL
UDP_RCVBUF = 4 << 20  # room for bursts while a listener's thread is busy
PORT0_ATTEMPTS = 16  # fresh UDP ports tried when TCP has the first one in use
IP_FREEBIND = 15  # linux/in.h
IPV6_FREEBIND = 78  # linux/in6.h


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int
    network: str | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" + (f"@{self.network}" if self.network else "")


class Scope(NamedTuple):
    """Where a query arrived: what its answer may depend on besides its bytes."""

    network: str | None
    tcp: bool
    address: IPv4Address | IPv6Address | None  # the listener's, for ns.<domain>


class _Bound:
    """One bound listener: its UDP thread, TCP server and open TCP connections."""

    def __init__(self, udp: UDPListener) -> None:
        self.udp = udp
        self.tcp: asyncio.Server | None = None
        self.connections: set[asyncio.Task] = set()


class DNSServer:
    """Answers queries from the current snapshot; see the module docstring."""

    def __init__(
        self,
        zone: Zone,
        upstream: Upstream | None = None,
        *,
        metrics: Metrics | None = None,
        snapshot: Snapshot | None = None,
        cache_size: int = 50_000,
        freebind: bool = True,
    ) -> None:
        """``freebind``: bind addresses that are on no interface yet (netplugd's
        gateways, see ``_bound_socket``); without it such an address is an error."""
        self.zone = zone
        self.upstream = upstream
        self.freebind = freebind
        self.metrics = metrics if metrics is not None else Metrics()
        self.cache = AnswerCache(cache_size)
        self._snapshot = snapshot if snapshot is not None else Snapshot()
        self._listeners: dict[Listener, _Bound] = {}
        self._forwards: set[asyncio.Task] = set()
        self._tcp: Slots[asyncio.Task] = Slots(TCP_PER_CLIENT, MAX_TCP)
        self.metrics.tcp_connections.set_function(lambda: len(self._tcp))
        self.metrics.cache_entries.set_function(lambda: len(self.cache))
        self.metrics.registry_names.set_function(lambda: self._snapshot.size)
        self.metrics.registry_revision.set_function(lambda: self._snapshot.revision)

    # -- state ---------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def update(self, snapshot: Snapshot) -> None:
        """Answer from ``snapshot`` from now on (call on the event loop)."""
        if snapshot is not self._snapshot:
            self._snapshot = snapshot
            self.cache.clear()  # after the swap: see ``cold``

    @property
    def listeners(self) -> list[Listener]:
        """The bound listeners (with the ports actually bound)."""
        return list(self._listeners)

    async def add_listener(self, listener: Listener) -> Listener:
        """Bind UDP and TCP on ``listener`` (port 0: one free port for both); the
        bound listener. Raises OSError when the address cannot be bound."""
        loop = asyncio.get_running_loop()
        address = ip_address(listener.host.split("%")[0])
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        udp_sock, tcp = _bound_pair(family, listener.host, listener.port, self.freebind)
        port = udp_sock.getsockname()[1]
        concrete = None if address.is_unspecified else address
        bound = Listener(listener.host, port, listener.network)
        udp = UDPListener(
            udp_sock,
            Scope(bound.network, False, concrete),
            self,
            loop,
            self.metrics.tally(),
            str(bound),
        )
        state = _Bound(udp)
        tcp_scope = Scope(bound.network, True, concrete)
        try:
            state.tcp = await asyncio.start_server(
                lambda r, w: self._serve_tcp(r, w, tcp_scope, state), sock=tcp
            )
        except OSError:
            udp_sock.close()
            tcp.close()
            self.metrics.retire(udp.tally)
            raise
        udp.start()
        self._listeners[bound] = state
        log.info("dns listening on %s (udp, tcp)", bound)
        return bound

    async def remove_listener(self, listener: Listener) -> None:
        """Close a listener and its TCP connections; a listener not bound is ignored."""
        bound = self._listeners.pop(listener, None)
        if bound is None:
            return
        await asyncio.to_thread(bound.udp.stop)
        self.metrics.retire(bound.udp.tally)
        assert bound.tcp is not None
        bound.tcp.close()
        for task in list(bound.connections):
            task.cancel()
        await asyncio.gather(*bound.connections, return_exceptions=True)
        await bound.tcp.wait_closed()
        log.info("dns stopped listening on %s", listener)

    async def set_listeners(self, wanted: list[Listener]) -> list[Listener]:
        """Make the bound listeners ``wanted``: close the others, bind the missing
        (a port 0 one is always bound anew). Returns the bound listeners; one
        that fails to bind is logged and left out."""
        for listener in [lst for lst in self._listeners if lst not in wanted]:
            await self.remove_listener(listener)
        for listener in wanted:
            if listener not in self._listeners:
                try:
                    await self.add_listener(listener)
                except OSError as e:
                    log.error("dns cannot listen on %s: %s", listener, e)
        return self.listeners

    async def close(self) -> None:
        for listener in list(self._listeners):
            await self.remove_listener(listener)
        for task in list(self._forwards):
            task.cancel()
        await asyncio.gather(*self._forwards, return_exceptions=True)

    # -- answering -------------------------------------------------------------

    def cold(self, data: bytes, scope: Scope, tally: Tally) -> bytes | Forward | None:
        """Resolve a query the cache does not hold (and cache the reply); counted
        in ``tally``, which belongs to the caller's thread."""
        m = self.metrics
        # The generation before the snapshot: ``update`` swaps, then clears, so
        # an answer from a snapshot that was swapped meanwhile is not cached.
        generation = self.cache.generation
        try:
            result = resolve(
                data,
                self._snapshot,
                self.zone,
                scope.network,
                tcp=scope.tcp,
                server_address=scope.address,
            )
        except Exception:  # resolve must not raise; if it does, drop, never stop
            log.exception("dns: resolver failed on %r", data[:64])
            result = None
        if result is None:
            m.malformed.inc()
            return None
        if isinstance(result, Forward):
            return result
        tally.misses += 1
        tagged = tag(result.qtype, result.rcode)
        tally.answers[tagged] += 1
        if result.cacheable:
            self.cache.put(scope, data[2:], result.variants, tagged, generation)
        elif result.rcode == FORMERR:
            m.malformed.inc()
        return result.variants[0]

    def cut_short(self, data: bytes, tally: Tally) -> bytes:
        """FORMERR for a datagram larger than a UDP listener reads (its rest is lost)."""
        self.metrics.malformed.inc()
        tally.answers[tag(None, FORMERR)] += 1
        return formerr(data)

    async def answer(self, data: bytes, scope: Scope) -> bytes | None:
        """The whole path for one query (cache, resolver, upstream), on the event
        loop (TCP); None: drop."""
        entry = self.cache.get(scope, data[2:])
        if entry is not None:
            self.metrics.loop.hits[entry.tag] += 1
            return data[:2] + entry.next()
        out = self.cold(data, scope, self.metrics.loop)
        if isinstance(out, Forward):
            return await self.forward(out)
        return out

    async def forward(self, fwd: Forward) -> bytes:
        """The upstreams' reply fitted to the client, or SERVFAIL."""
        if self.upstream is None or not self.upstream.servers:
            reply, outcome = None, "failed"
        else:
            reply, outcome = await self.upstream.forward(fwd)
        self.metrics.forwards.labels(outcome).inc()
        out = servfail(fwd) if reply is None else fit(reply, fwd)
        self.metrics.loop.answers[tag(fwd.qtype, out[3] & 0xF)] += 1
        return out

    def forward_udp(self, fwd: Forward, udp: UDPListener, addr: object, t0: float) -> None:
        """Forward a query a UDP listener's thread handed over (on the event loop)."""
        if len(self._forwards) >= MAX_FORWARDS:
            self.metrics.forwards.labels("overload").inc()
            udp.send(servfail(fwd), addr)
            return
        task = asyncio.get_running_loop().create_task(self._forward_send(fwd, udp, addr, t0))
        self._forwards.add(task)
        task.add_done_callback(self._forwards.discard)

    async def _forward_send(self, fwd: Forward, udp: UDPListener, addr: object, t0: float) -> None:
        out = await self.forward(fwd)
        udp.send(out, addr)
        self.metrics.loop.udp.observe(perf_counter() - t0)

    async def _serve_tcp(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        scope: Scope,
        bound: _Bound,
    ) -> None:
        task = asyncio.current_task()
        peer = writer.get_extra_info("peername")
        if task is None or not peer or not self._admit(task, peer[0]):
            writer.close()
            return
        bound.connections.add(task)
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                self._tcp.busy(task)
                data = await asyncio.wait_for(
                    reader.readexactly(int.from_bytes(head, "big")), TCP_IO
                )
                t0 = perf_counter()
                out = await self.answer(data, scope)
                if out is None:
                    break  # unreadable: RFC 7766 lets us close the connection
                writer.write(len(out).to_bytes(2, "big") + out)
                await asyncio.wait_for(writer.drain(), TCP_IO)
                self.metrics.loop.tcp.observe(perf_counter() - t0)
                self._tcp.idle(task)
        except TimeoutError:
            self.metrics.tcp_closed.labels("timeout").inc()
        except (asyncio.IncompleteReadError, OSError):
            pass
        except Exception:
            log.exception("dns: TCP connection failed")
        finally:
            self._tcp.release(task)
            bound.connections.discard(task)
            writer.close()

    def _admit(self, task: asyncio.Task, client: str) -> bool:
        """Whether a new TCP connection of ``client`` may stay; closes the idle one
        it replaces, if any (see ``slots``)."""
        admitted, evicted, reason = self._tcp.admit(task, client)
        if reason:
            self.metrics.tcp_closed.labels(reason).inc()
        if evicted is not None:
            evicted.cancel()  # waiting for a query: its ``finally`` closes it
        return admitted


def _bound_pair(
    family: int, host: str, port: int, freebind: bool = True
) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets bound to one port. With port 0 the kernel picks the
    UDP port, which TCP may already have in use: pick again, a bounded number
    of times."""
    attempts_left = PORT0_ATTEMPTS
    while True:
        udp = _bound_socket(family, socket.SOCK_DGRAM, host, port, freebind)
        try:
            bound = udp.getsockname()[1]
            return udp, _bound_socket(family, socket.SOCK_STREAM, host, bound, freebind)
        except OSError as e:
            udp.close()
            attempts_left -= 1
            if port != 0 or e.errno != errno.EADDRINUSE or attempts_left == 0:
                raise


def _bound_socket(
    family: int, kind: int, host: str, port: int, freebind: bool = True
) -> socket.socket:
    """A socket bound to ``host``:``port``. FREEBIND lets netplugd listen on a
    network's gateway address as soon as the block is leased, before the ADD
    that leased it has put the address on the bridge. netplug-dns goes without:
    there an address on no interface is a mistyped --listen, which would never
    receive a query."""
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if freebind and family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        elif freebind:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
