"""Who may hold the DNS server's TCP connections (pure): a cap per client and in all.

RFC 7766 (6.2.2) asks a server not to let one client take every connection, and
lets it close idle connections when it runs short. ``Slots`` decides which
connection goes; the server closes it. The rule:

- one client (source address) holds at most ``per_client`` connections; a new
  one past that takes the place of that client's connection idle the longest;
- all clients together hold at most ``total``; a new one past that takes the
  place of the connection idle the longest, whoever holds it;
- a connection is idle while it waits for a query. One that is reading or
  answering a query is never taken; if none can be taken, the new connection
  is refused.

So one client with hundreds of connections keeps ``per_client`` of them, and a
client that opens its first connection gets it unless every slot is mid-query.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from typing import Generic, NamedTuple, TypeVar

K = TypeVar("K", bound=Hashable)


class Admission(NamedTuple, Generic[K]):
    admitted: bool
    evicted: K | None  # a connection to close to make room, or None
    reason: str  # why a connection goes: "client_limit" or "server_full"; "" if none


class Slots(Generic[K]):
    """The connections held, by client, and which of them wait idle."""

    def __init__(self, per_client: int, total: int) -> None:
        self.per_client, self.total = per_client, total
        self._client: dict[K, str] = {}  # connection -> its client
        self._held: Counter[str] = Counter()  # client -> connections held
        self._idle: dict[K, None] = {}  # idle connections, the longest idle first

    def __len__(self) -> int:
        return len(self._client)

    def admit(self, conn: K, client: str) -> Admission[K]:
        """Take ``conn`` of ``client`` in as idle, unless refused; the connection
        to close to make room is released already."""
        if self._held[client] >= self.per_client:
            return self._replace(conn, client, client, "client_limit")
        if len(self._client) >= self.total:
            return self._replace(conn, client, None, "server_full")
        self._add(conn, client)
        return Admission(True, None, "")

    def busy(self, conn: K) -> None:
        """``conn`` started on a query: it cannot be taken until ``idle``."""
        self._idle.pop(conn, None)

    def idle(self, conn: K) -> None:
        """``conn`` waits for its next query (the longest idle is taken first)."""
        if conn in self._client:
            self._idle.pop(conn, None)
            self._idle[conn] = None

    def release(self, conn: K) -> None:
        """``conn`` is closed (idempotent)."""
        client = self._client.pop(conn, None)
        if client is None:
            return
        self._idle.pop(conn, None)
        self._held[client] -= 1
        if not self._held[client]:
            del self._held[client]

    def _replace(self, conn: K, client: str, of: str | None, reason: str) -> Admission[K]:
        """Admit ``conn`` in place of the longest idle connection (of client ``of``,
        or of anyone for None); refuse it if there is none."""
        victim = next((c for c in self._idle if of is None or self._client[c] == of), None)
        if victim is None:
            return Admission(False, None, reason)
        self.release(victim)
        self._add(conn, client)
        return Admission(True, victim, reason)

    def _add(self, conn: K, client: str) -> None:
        self._client[conn] = client
        self._held[client] += 1
        self._idle[conn] = None
