"""The agent's one view of the store, fanned out to its parts.

``StoreView.run`` (a supervised loop) reads every prefix a subscriber follows
in one transaction, then watches ``schema.ROOT`` from that revision + 1, and
keeps a mirror of those records. Each subscriber has a ``Feed``: the view
puts a ``Full`` update (every record it follows, at one revision) after each
full read, and a ``Delta`` (the events under its prefixes) after each batch.
A part reads only its feed and knows no other part, so one that fails (its
supervised loop is restarted) neither blocks nor starves the others: on each
(re)start, ``Feed.runs`` hands it a fresh ``Full`` from the mirror.

The store's identity is guarded: ``trust()`` before every full read and
before any batch that touches the identity key; a store that must not be
followed raises there (StoreReset), and every part keeps what it holds. The
view then reports the store "reset" (or "corrupt") with the error naming
``netplugctl recover`` (``health``), which makes the agent degraded. Once this
host recovered, the view carries the other hosts' records that the store has
not got back yet (``reset_carrier``; reported in ``health`` too), and keeps
them on the host as well: a restarted agent carries on. Reading, watching,
re-reading a compacted watch and retrying a failed store with backoff are
``Following``'s (shared with netplug-dns's registry follower).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from netplug import faults
from netplug.agent import reset_carry
from netplug.agent.carry_file import CarryFile
from netplug.agent.reset_carrier import ResetCarrier
from netplug.agent.reset_carry import RECOVER_GRACE
from netplug.ipam.schema import ROOT, Identity
from netplug.ipam.store.base import Event, Get, KeyValue, Store, StoreCorrupt, StoreError
from netplug.ipam.store.follow import Following

log = logging.getLogger(__name__)

FEED_BOUND = 1000  # deltas a slow part may fall behind by before it gets a Full instead
STOP_CHECK = 1.0  # seconds a part waits on its feed between checks for stop

Target = Callable[[threading.Event], None]


@dataclass(frozen=True, slots=True)
class Full:
    """Every record under the feed's prefixes, at ``revision``."""

    revision: int
    kvs: tuple[KeyValue, ...]


@dataclass(frozen=True, slots=True)
class Delta:
    """The events of one watch batch under the feed's prefixes (never empty)."""

    events: tuple[Event, ...]
    # When the view took the batch from the store (monotonic): a part that is
    # busy takes it later, and tells how long a change took from here.
    received: float = field(default_factory=time.monotonic, compare=False)


Update = Full | Delta


class InjectedFault(RuntimeError):
    """What a part's failure point raises: as a bug in it would (``netplug.faults``)."""


class Feed:
    """One subscriber's queue of updates: filled by the view, drained by the part."""

    def __init__(self, view: StoreView, name: str, prefixes: tuple[str, ...]) -> None:
        self.view, self.name, self.prefixes = view, name, prefixes
        self._cond = threading.Condition()
        self._queue: list[Update] = []

    def take(self, stop: threading.Event, timeout: float) -> list[Update]:
        """The updates queued, oldest first, waiting up to ``timeout`` seconds for
        one (checking ``stop`` every STOP_CHECK); [] on timeout or stop. The
        failure point named after the feed's part is here (``netplug.faults``)."""
        waited = 0.0
        with self._cond:
            while not self._queue and waited < timeout and not stop.is_set():
                step = min(STOP_CHECK, timeout - waited)
                self._cond.wait(step)
                waited += step
            updates, self._queue = self._queue, []
        if updates:
            faults.check(self.name, InjectedFault)
        return updates

    def runs(self, part: Callable[[Feed, threading.Event], None]) -> Target:
        """The supervisor's target for ``part(feed, stop)``: each run starts from a
        ``Full`` of what the view holds (a restarted part lost what it was fed)."""

        def run(stop: threading.Event) -> None:
            self.view.rejoin(self)
            part(self, stop)

        return run

    def follows(self, key: str) -> bool:
        return key.startswith(self.prefixes)

    # -- the view's side (under the view's lock) ------------------------------------

    def _reset(self, full: Full) -> None:
        with self._cond:
            self._queue = [full]
            self._cond.notify()

    def _add(self, delta: Delta) -> bool:
        """Queue ``delta``; False when the part is too far behind (give it a Full)."""
        with self._cond:
            if len(self._queue) >= FEED_BOUND:
                return False
            self._queue.append(delta)
            self._cond.notify()
            return True


class StoreView(Following):
    """The agent's single store watch (``run``, from ``Following``); see the module."""

    def __init__(
        self,
        store: Store,
        trust: Callable[[], object] | None = None,
        on_status: Callable[[bool], None] | None = None,
        host: str | None = None,
        recover_grace: float = RECOVER_GRACE,
        carry_file: CarryFile | None = None,
    ) -> None:
        self.store, self.prefix, self.name = store, ROOT, "store view"
        # Raises StoreError when the store must not be followed (it was reset): an
        # emptied store would otherwise remove every peer, name and DNS listener.
        self._trust = trust
        self._on_status = on_status
        self.up = False
        self._refusal_kind = ""  # "reset" or "corrupt" while ``refusal`` is set
        self._feeds: list[Feed] = []
        self._lock = threading.Lock()  # the mirror and the feeds' order of updates
        self._mirror: dict[str, KeyValue] = {}
        self._revision = 0
        self._read_once = False  # whether the mirror holds a full read yet
        self._followed: tuple[str, ...] = ()
        # After a reset: the other hosts' records the store has not got back;
        # carried only for a view of ``host``.
        self._carrier = None if host is None else ResetCarrier(host, recover_grace, carry_file)

    def subscribe(self, name: str, prefixes: Iterable[str] = ()) -> Feed:
        """A feed of the records under ``prefixes`` (none: only the Full after each
        full read, i.e. "the store answers again"). Subscribe before ``run``."""
        feed = Feed(self, name, tuple(prefixes))
        self._feeds.append(feed)
        return feed

    def rejoin(self, feed: Feed) -> None:
        """Queue a Full of the mirror for ``feed`` alone (before the first read:
        nothing, the first read's Full is on its way)."""
        with self._lock:
            if self._read_once:
                feed._reset(self._full_for(feed))

    def run(self, stop: threading.Event) -> None:
        """Follow until ``stop`` (a loop for the supervisor): see ``Following``."""
        self.follow(stop)

    def _prefixes(self) -> tuple[str, ...]:
        return covering(p for feed in self._feeds for p in feed.prefixes)

    def _read(self) -> int:
        faults.check("store-view", InjectedFault)
        if self._trust is not None:
            self._trust()
        self._followed = self._prefixes()  # fixed once the parts have subscribed
        result = self.store.txn((), [Get(p, prefix=True) for p in self._followed])
        read = {kv.key: kv for kvs in result.responses for kv in kvs}  # type: ignore[union-attr]
        with self._lock:
            mirror = self._carry_over(read, resumed=bool(self.refusal))
            self._mirror, self._revision, self._read_once = mirror, result.revision, True
            for feed in self._feeds:
                feed._reset(self._full_for(feed))
        if self._carrier is not None:
            self._carrier.save()
        self._status(True)
        return result.revision

    def _apply(self, batch: list[Event]) -> None:
        if self._trust is not None and any(_identity(e) for e in batch):
            self._trust()
        followed = [e for e in batch if e.kv.key.startswith(self._followed)]
        if followed:
            self._publish(followed)

    def _carry_over(self, read: dict[str, KeyValue], resumed: bool) -> dict[str, KeyValue]:
        """``read`` with what the view carries: the records the reset took of the
        hosts not recovered yet, from the first read after this host recovered
        (or from the carry saved, at an agent's first read), as long as ``read``
        does not speak for them."""
        carrier = self._carrier
        if carrier is None:
            return read
        if resumed and self._read_once:
            carrier.begin(self._mirror, read)
        elif not self._read_once:
            carrier.resume_saved(read)
        else:
            carrier.refresh(read)
        return {**carrier.flat(), **read} if carrier else read

    def _tick(self) -> None:
        """Let go of what is still carried once the grace ran out; save the carry."""
        if self._carrier is None:
            return
        gone = self._carrier.expired()
        if gone:
            self._publish([reset_carry.deletion(k, self._revision) for k in reset_carry.flat(gone)])
        self._carrier.save()

    def _publish(self, events: list[Event]) -> None:
        if not events:
            return
        with self._lock:
            if self._carrier:
                revision = max(self._revision, events[-1].kv.mod_revision)
                events = events + self._carrier.settle(events, revision)
            _apply(self._mirror, events)
            self._revision = max(self._revision, events[-1].kv.mod_revision)
            for feed in self._feeds:
                mine = tuple(e for e in events if feed.follows(e.kv.key))
                if mine and not feed._add(Delta(mine)):
                    feed._reset(self._full_for(feed))

    def _full_for(self, feed: Feed) -> Full:
        kvs = tuple(kv for key, kv in self._mirror.items() if feed.follows(key))
        return Full(self._revision, kvs)

    def health(self) -> dict:
        """The store as the agent reports it: ``state`` "up", "unreachable", or
        "reset" / "corrupt" with the ``error`` that says how to recover."""
        if self.up:
            return {"state": "up", **(self._carrier.report() if self._carrier else {})}
        if not self.refusal:
            return {"state": "unreachable"}
        return {"state": self._refusal_kind, "error": self.refusal}

    def _refused(self, error: StoreError) -> None:
        self._refusal_kind = "corrupt" if isinstance(error, StoreCorrupt) else "reset"
        if not self.refusal:  # the first refusal since the store answered
            self._save_before_reset()
        super()._refused(error)

    def _save_before_reset(self) -> None:
        """Keep the last read's other hosts' records on the host: what an agent
        started after this host recovered carries from."""
        if self._carrier is None or not self._read_once:
            return
        with self._lock:
            mirror = dict(self._mirror)
        self._carrier.keep_before_reset(mirror)

    def _status(self, up: bool) -> None:
        if up:
            self.refusal = ""
        if up != self.up:
            self.up = up
            if self._on_status is not None:
                self._on_status(up)


def mirror(records: dict[str, KeyValue], update: Update) -> None:
    """Bring ``records`` (key -> record) to what ``update`` says."""
    if isinstance(update, Full):
        records.clear()
        records.update((kv.key, kv) for kv in update.kvs)
    else:
        _apply(records, update.events)


def _apply(records: dict[str, KeyValue], events: Iterable[Event]) -> None:
    for event in events:
        if event.type == "put":
            records[event.kv.key] = event.kv
        else:
            records.pop(event.kv.key, None)


def covering(prefixes: Iterable[str]) -> tuple[str, ...]:
    """The prefixes that cover all of ``prefixes``, sorted (pure): one under another
    (a part's own record under the hosts another part follows) is not read twice."""
    every = sorted(set(prefixes))
    return tuple(p for p in every if not any(p != q and p.startswith(q) for q in every))


def _identity(event: Event) -> bool:
    return event.kv.key == Identity.key()
