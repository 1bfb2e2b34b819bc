"""The store interface: etcd's data model, whatever the backend.

Every backend (embedded SQLite, etcd) offers the same operations with etcd v3
semantics, so the IPAM, the registry and the agent are written once:

- a flat, ordered key space of ``str`` keys and ``bytes`` values;
- one cluster-wide revision that every write bumps; each key records the
  revision that created it (``create_revision``), last changed it
  (``mod_revision``) and how often it was written (``version``);
- ``txn``: compare-and-swap transactions (all compares hold -> success ops,
  else failure ops), applied atomically at one new revision;
- ``range`` over a key or a prefix, ``watch`` of a prefix from a revision;
- leases with a TTL: keys attached to a lease vanish when it expires or is
  revoked, as etcd does.

Methods are blocking; async callers use ``asyncio.to_thread``. Any failure to
reach the backend raises ``StoreUnavailable`` (the CNI plugin maps it to code
11, "try again later"). Two of its kinds are not transient and get their own
codes: ``StoreCorrupt`` (the backend's data is damaged) and ``StoreReset`` (the
store was emptied or replaced under its users). They stay ``StoreUnavailable``
so that loops that retry an outage (the agent's followers, deferred releases)
keep retrying until an operator has fixed the store.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol


class StoreError(Exception):
    """Base of every store error."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached or did not answer in time (transient)."""


class OutcomeUnknown(StoreUnavailable):
    """A write reached the backend but its answer was lost (a member died, an
    election): it may or may not have been applied. A compare-and-swap loop
    reads again and decides from what it finds; it must not simply repeat."""


class StoreCorrupt(StoreUnavailable):
    """The backend answers, but its data is damaged (not a database, a malformed
    image): retrying will not help; an operator must replace it."""


class StoreReset(StoreUnavailable):
    """The store was emptied or replaced under a process that had it open, or its
    identity is not the one this host remembers (see ``netplug.ipam.identity``)."""


class Compacted(StoreError):
    """A watch asked for history older than the store still keeps."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted up to {compact_revision}")
        self.compact_revision = compact_revision


class LeaseNotFound(StoreError):
    """The lease expired or was revoked."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


CompareTarget = Literal["create", "mod", "version", "value"]
CompareOp = Literal["=", "!=", "<", ">"]


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction, as etcd's ``Compare``.

    A missing key has create/mod revision and version 0 and value ``b""``,
    so ``Compare(key, "create", "=", 0)`` means "the key does not exist".
    """

    key: str
    target: CompareTarget
    op: CompareOp
    value: int | bytes

    @classmethod
    def absent(cls, key: str) -> Compare:
        return cls(key, "create", "=", 0)

    @classmethod
    def unchanged(cls, kv: KeyValue) -> Compare:
        return cls(kv.key, "mod", "=", kv.mod_revision)


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Get:
    key: str
    prefix: bool = False


Op = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class TxnResult:
    """``responses`` holds one entry per op of the branch taken: the list of
    ``KeyValue`` for a ``Get``, the number of deleted keys for a ``Delete``,
    ``None`` for a ``Put``."""

    succeeded: bool
    revision: int
    responses: list[object] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Event:
    type: Literal["put", "delete"]
    kv: KeyValue  # for a delete: key, value b"", mod_revision = deletion revision
    prev_value: bytes | None = None


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KeyValue]
    revision: int


def prefix_end(prefix: str) -> str:
    """The first key after every key that starts with ``prefix`` (etcd's range_end)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\0"


class Store(Protocol):
    """A key-value store with etcd's model. Backends: ``sqlite.SQLiteStore``, etcd."""

    url: str

    def get(self, key: str) -> KeyValue | None:
        """The key's current value, or None."""

    def range(self, key: str, prefix: bool = False, limit: int = 0) -> RangeResult:
        """One key, or every key under a prefix, in key order, at one revision."""

    def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Atomically: if every compare holds run ``success`` else ``failure``.

        A transaction that writes bumps the revision once; a read-only one does not.
        """

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Write one key; returns the new revision."""

    def delete(self, key: str, prefix: bool = False) -> int:
        """Delete a key or a prefix; returns how many keys went."""

    def grant(self, ttl: float) -> int:
        """A new lease that expires ``ttl`` seconds from now unless kept alive."""

    def keepalive(self, lease: int) -> float:
        """Renew a lease to its full TTL; returns the TTL. Raises LeaseNotFound."""

    def revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys. A missing lease is not an error."""

    def watch(self, prefix: str, start_revision: int, timeout: float) -> Iterator[list[Event]]:
        """Batches of events under ``prefix`` from ``start_revision`` on, in revision order.

        Yields an empty batch at least every ``timeout`` seconds so that the
        caller can stop; raises ``Compacted`` when history is gone.
        """

    def status(self) -> int:
        """The current revision; raises StoreUnavailable when the store is unusable."""

    def close(self) -> None: ...
