"""One UDP listener: its socket served by a thread of its own, in batches.

Why a thread and not the event loop: the thread blocks in ``recvmmsg`` for a
batch of datagrams (``mmsg``) and answers the whole batch with one
``sendmmsg``, with no readiness polling, callback or transport per datagram
around it, and it never waits for the loop (HTTP, TCP, the registry) or makes
it wait, but for the GIL while a query that missed the cache is resolved
(dns/README.md has the profile).

A cache hit is a lookup in the scope's table, the reply copied over the
query in its slot, and one increment of the listener's own ``Tally`` (only
this thread writes it). A miss is resolved here, in the thread; a name that
is not ours is handed to the event loop, which forwards it and sends the
reply (``send``). Latency is measured per batch: each reply in it left when
the batch was sent, so the batch's time, counted once per reply, is each
query's time from being read to being answered.

``stop`` shuts the socket down, which wakes a blocked ``recvmmsg`` on Linux
(it then returns a datagram with no sender), and waits for the thread.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Hashable
from contextlib import suppress
from time import perf_counter
from typing import Protocol

from netplug.dns.cache import AnswerCache
from netplug.dns.metrics import Tally
from netplug.dns.mmsg import LEN, STRIDE, Batch
from netplug.dns.resolve import Forward

log = logging.getLogger(__name__)


class Answerer(Protocol):
    """What a UDP listener asks of its server (``DNSServer``): named here so
    that the server may import this module, and not the other way round."""

    cache: AnswerCache

    def cut_short(self, data: bytes, tally: Tally) -> bytes: ...

    def cold(self, data: bytes, scope: Hashable, tally: Tally) -> bytes | Forward | None: ...

    def forward_udp(self, fwd: Forward, udp: UDPListener, addr: object, t0: float) -> None: ...


STOP_WAIT = 2.0  # seconds for the thread to finish the query it is on
ERROR_PAUSE = 0.01  # seconds after an error before reading again


class UDPListener:
    def __init__(
        self,
        sock: socket.socket,
        scope: Hashable,
        server: Answerer,
        loop: asyncio.AbstractEventLoop,
        tally: Tally,
        name: str,
    ) -> None:
        self.sock, self.scope, self.server, self.loop = sock, scope, server, loop
        self.tally = tally
        self.table = server.cache.table(scope)
        self.batch = Batch(sock.family)
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
            time.sleep(ERROR_PAUSE)  # an error that repeats must not spin the thread

    def _serve(self) -> None:
        """The hot loop, until the socket is shut down: keep it short. A cache hit
        writes its reply over its query in the batch's slot; the rest go the
        slow way, and those without a reply now leave a gap in the batch."""
        batch, fd = self.batch, self.sock.fileno()
        view, received, lengths, slot = batch.view, batch.received, batch.lengths, batch.slot
        get, hits, udp = self.table.get, self.tally.hits, self.tally.udp
        while not self._stopping:
            n = batch.receive(fd)
            t0 = perf_counter()
            start = answered = 0  # start: the first reply not sent yet
            for i in range(n):
                at = i * slot
                length = received[i * STRIDE + LEN]
                entry = get(bytes(view[at + 2 : at + length]))
                if entry is not None:
                    reply = entry.single or entry.next()
                    end = at + 2 + len(reply)
                    if end <= at + slot:
                        view[at + 2 : end] = reply
                        lengths[2 * i + 1] = end - at
                        hits[entry.tag] += 1
                        continue
                if not self._slow(i, length, t0):
                    batch.send(fd, start, i)
                    start = i + 1
                    answered -= 1
            batch.send(fd, start, n)
            answered += n
            if answered:
                udp.observe(perf_counter() - t0, answered)

    def _slow(self, i: int, length: int, t0: float) -> bool:
        """Datagram ``i`` of the batch, which the cache does not answer (or
        whose answer does not fit its slot); whether its reply is in its slot."""
        batch, at = self.batch, i * self.batch.slot
        addr = batch.address(i)
        if addr is None:
            return False  # shut down: the batch's last "datagram"
        data = bytes(batch.view[at : at + length])
        entry = self.table.get(data[2:])
        if batch.cut_short(i):  # never cached, so never a hit above
            out: bytes | Forward | None = self.server.cut_short(data, self.tally)
        elif entry is not None:  # too large for the slot
            out = data[:2] + (entry.single or entry.next())
            self.tally.hits[entry.tag] += 1
        else:
            out = self.server.cold(data, self.scope, self.tally)
        if isinstance(out, Forward):
            self.loop.call_soon_threadsafe(self.server.forward_udp, out, self, addr, t0)
            return False
        if out is None:
            return False
        if len(out) <= batch.slot:
            batch.view[at : at + len(out)] = out
            batch.lengths[2 * i + 1] = len(out)
            return True
        self.sock.sendto(out, addr)
        self.tally.udp.observe(perf_counter() - t0)
        return False
