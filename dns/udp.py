"""One UDP listener: its socket served by a thread of its own, blocking.

Why a thread and not the event loop: per datagram, a blocking ``recvfrom``
and ``sendto`` in a loop cost fewer instructions than the event loop's
callback, transport and readiness polling around them, and the thread never
waits for the loop (HTTP, TCP, the registry) or makes it wait, but for the
GIL on a query that misses the cache (see dns/README.md for the profile).

A cache hit is a lookup in the scope's table, one concatenation and one
``sendto``, counted in the listener's own ``Tally`` (only this thread writes
it). One hit in ``SAMPLE`` goes the measured way, as does every miss: the
resolver runs here, in the thread; a name that is not ours is handed to the
event loop, which forwards it and sends the reply (``send``).

``stop`` shuts the socket down, which wakes a blocked ``recvfrom`` on Linux
(it then returns no address), and waits for the thread.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from contextlib import suppress
from time import perf_counter
from typing import TYPE_CHECKING

from netplug.dns.metrics import SAMPLE, Tally
from netplug.dns.resolve import Forward

if TYPE_CHECKING:
    from netplug.dns.server import DNSServer, Scope

log = logging.getLogger(__name__)

MAX_QUERY = 4096  # bytes read of a datagram: queries are far smaller; more is cut
STOP_WAIT = 2.0  # seconds for the thread to finish the query it is on


class UDPListener:
    def __init__(
        self,
        sock: socket.socket,
        scope: Scope,
        server: DNSServer,
        loop: asyncio.AbstractEventLoop,
        tally: Tally,
        name: str,
    ) -> None:
        self.sock, self.scope, self.server, self.loop = sock, scope, server, loop
        self.tally = tally
        self.table = server.cache.table(scope)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"dns-udp {name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket (blocks up to STOP_WAIT)."""
        self._stopping = True
        # An unconnected UDP socket says ENOTCONN, and its reader wakes all the same.
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(STOP_WAIT)
        self.sock.close()

    def send(self, reply: bytes, addr: object) -> None:
        """Send from the event loop (a forwarded reply): never blocks it; a reply
        the kernel cannot take now, or for a closed listener, is dropped."""
        try:
            self.sock.sendto(reply, socket.MSG_DONTWAIT, addr)
        except OSError as e:
            log.debug("dns: UDP reply dropped: %s", e)

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._serve()
                return
            except OSError as e:  # a reply the kernel refused: keep serving the others
                if self._stopping or self.sock.fileno() == -1:
                    return
                log.debug("dns: UDP error: %s", e)
            except Exception:  # the resolver must not raise; if it does, never stop
                log.exception("dns: UDP listener failed on a query")

    def _serve(self) -> None:
        """The hot loop, until the socket is shut down: keep it short."""
        get, hits = self.table.get, self.tally.hits
        recvfrom, sendto = self.sock.recvfrom, self.sock.sendto
        left = SAMPLE - 1  # cache hits to answer before the next measured one
        while True:
            data, addr = recvfrom(MAX_QUERY)
            if left:
                entry = get(data[2:])
                if entry is not None:
                    sendto(data[:2] + (entry.single or entry.next()), addr)
                    hits[entry.tag] += 1
                    left -= 1
                    continue
            if addr is None:
                return  # shut down
            if self._measured(data, addr):
                left = SAMPLE - 1

    def _measured(self, data: bytes, addr: object) -> bool:
        """Answer one query and time it; whether it was a cache hit (it then
        stands for the SAMPLE - 1 hits answered unmeasured before it)."""
        t0 = perf_counter()
        tally = self.tally
        entry = self.table.get(data[2:])
        if entry is not None:
            self.sock.sendto(data[:2] + (entry.single or entry.next()), addr)
            tally.hits[entry.tag] += 1
            tally.udp.observe(perf_counter() - t0, SAMPLE)
            return True
        out = self.server.cold(data, self.scope, tally)
        if isinstance(out, Forward):
            self.loop.call_soon_threadsafe(self.server.forward_udp, out, self, addr, t0)
        elif out is not None:
            self.sock.sendto(out, addr)
            tally.udp.observe(perf_counter() - t0)
        return False
