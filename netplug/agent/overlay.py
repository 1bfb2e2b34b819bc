"""Keeping this host's VXLAN peers equal to what the store says.

Any change to hosts, VTEPs or blocks triggers a reconcile (read the kernel,
compute the plan, apply the diff), and a full reconcile also runs every
``RESYNC`` seconds and at start, so a restarted agent adds what is missing and
removes what is stale without touching entries that are right. The records
arrive on the overlay's feed from the agent's store view (``follow``), which
also guards the store's identity; the overlay reads nothing itself. A record
that cannot be read is skipped (and reported), not fatal to every network.
When the store is unreachable, the feed is quiet and what is programmed stays
programmed.

When the store was reset, the view follows it again once this host has
recovered, while the other hosts' records come back only as each of them
recovers (and re-registers: the reset took every host's lease). For up to
``recover_grace`` seconds from then the overlay keeps the peers no record
speaks for yet (``overlay_plan.unrecorded``), and counts a host whose VTEP is
back as live until its agent registers again: recovering one host after another
cuts no host off from the others. It ends when every peer it kept is recorded
again, or, for the hosts that never recovered, when the grace runs out (logged).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from netplug.agent import records
from netplug.agent.overlay_plan import NOTHING, Vtep, desired, diff, unrecorded
from netplug.agent.records import BadRecords
from netplug.agent.store_view import Feed, Full, mirror
from netplug.ipam.blocks import Network
from netplug.ipam.store.base import KeyValue
from netplug.net import netns, peers
from netplug.net.links import find
from netplug.net.peers import PeerState
from netplug.net.vxlan import device_name

log = logging.getLogger(__name__)

RESYNC = 10.0
RETRY = 1.0
RECOVER_GRACE = 600.0  # seconds peers of hosts not yet recovered are kept after a reset
WATCHED = (records.HOSTS, records.VTEPS, records.BLOCKS)  # what the overlay's feed follows
PART = "overlay"


@dataclass(frozen=True, slots=True)
class View:
    live_hosts: set[str]
    vteps: dict[str, list[Vtep]]  # by network
    blocks: dict[str, dict[Network, str]]  # by network: block -> host
    bad: records.Bad = field(default_factory=dict)  # the records skipped


def view_of(kvs: Iterable[KeyValue]) -> View:
    """Hosts, VTEPs and blocks of every network in ``kvs`` (pure; other keys are
    ignored, and what cannot be read is skipped into ``bad``: one foreign record
    must not stop the overlay everywhere)."""
    by_kind: dict[str, list[KeyValue]] = {prefix: [] for prefix in WATCHED}
    for kv in kvs:
        prefix = next((p for p in WATCHED if kv.key.startswith(p)), None)
        if prefix is not None:
            by_kind[prefix].append(kv)
    bad: records.Bad = {}
    live = set(records.readable(by_kind[records.HOSTS], records.host, bad))
    vteps: dict[str, list[Vtep]] = defaultdict(list)
    for vtep in records.readable(by_kind[records.VTEPS], records.vtep, bad):
        vteps[vtep.network].append(vtep)
    blocks = records.blocks_by_network(by_kind[records.BLOCKS], bad)
    return View(live, dict(vteps), blocks, bad)


class Overlay:
    def __init__(
        self,
        host: str,
        bad_records: BadRecords | None = None,
        on_reconcile: Callable[[], None] | None = None,
        recover_grace: float = RECOVER_GRACE,
    ) -> None:
        self.host = host
        self.bad_records = bad_records or BadRecords()
        self.on_reconcile = on_reconcile  # counts reconciles (/metrics)
        self.recover_grace = recover_grace
        # While the other hosts recover from a store reset: until when (monotonic)
        # unrecorded peers are kept, and what was kept (logged when it changes).
        # On the object, not in ``follow``: a restarted part keeps them.
        self._recovering_until: float | None = None
        self._kept: dict[str, PeerState] = {}

    def reconcile(self, kvs: Iterable[KeyValue]) -> View:
        """Make every local VXLAN device's peers match the records ``kvs``; returns
        the view they make."""
        view = view_of(kvs)
        self.bad_records.report(PART, view.bad)
        self.program(view)
        if self.on_reconcile is not None:
            self.on_reconcile()
        return view

    def resumed(self, now: float) -> None:
        """The store view follows a store that was reset again (this host recovered)."""
        self._recovering_until = now + self.recover_grace

    def program(self, view: View) -> None:
        """The kernel half of ``reconcile``: peers of each network with a local device."""
        recovering = self._recovering(time.monotonic())
        kept: dict[str, PeerState] = {}
        unregistered: set[str] = set()  # recovered hosts whose agent has not registered
        with netns.handle() as ipr:
            for network, vteps in view.vteps.items():
                mine = next((v for v in vteps if v.host == self.host), None)
                link = find(ipr, device_name(mine.vni)) if mine else None
                if link is None:
                    continue
                blocks = view.blocks.get(network, {})
                live = view.live_hosts
                have, keep = peers.read(link.index), NOTHING
                if recovering:
                    unregistered |= {v.host for v in vteps} - live - {self.host}
                    live = live | unregistered
                    keep = unrecorded(have, vteps, blocks)
                    if keep:
                        kept[network] = keep
                add, remove = diff(have, desired(self.host, live, vteps, blocks), keep)
                if add or remove:
                    log.info(
                        "network %s: peers %s; %s",
                        network,
                        _describe("+", add),
                        _describe("-", remove),
                    )
                    peers.apply(ipr, link.index, add, remove)
        if recovering:
            self._note_recovery(kept, unregistered)

    def health(self) -> dict:
        """What the agent reports of the overlay: the peers it keeps for hosts not
        recovered from a store reset yet, and for how many seconds more."""
        until, kept = self._recovering_until, self._kept
        if until is None or not kept:
            return {}
        left = max(round(until - time.monotonic()), 0)
        return {"keptAfterReset": _kept_routes(kept), "keptFor": left}

    def _next_resync(self, now: float) -> float:
        """Seconds to the next full reconcile: RESYNC, or the end of the grace."""
        if self._recovering_until is None:
            return RESYNC
        return min(RESYNC, max(self._recovering_until - now, 0.0) + RETRY / 10)

    def _recovering(self, now: float) -> bool:
        """Whether the grace after a store reset runs (ended, with what it kept
        logged, when it ran out)."""
        if self._recovering_until is None:
            return False
        if now < self._recovering_until:
            return True
        if self._kept:
            log.warning(
                "overlay: dropping the peers of hosts that did not recover within %.0f s "
                "of the store reset: %s",
                self.recover_grace,
                _kept_routes(self._kept),
            )
        self._recovering_until, self._kept = None, {}
        return False

    def _note_recovery(self, kept: dict[str, PeerState], unregistered: set[str]) -> None:
        """Log what is kept when it changes; end the grace once nothing is kept and
        every host whose VTEP is back has registered again."""
        if kept and kept != self._kept:
            log.warning(
                "overlay: store reset: keeping the peers it does not record yet (%s) for "
                "their hosts to recover, for up to %.0f s: run `netplugctl recover` there",
                _kept_routes(kept),
                self.recover_grace,
            )
        self._kept = kept
        if not kept and not unregistered:
            log.info("overlay: every peer is in the store again after its reset")
            self._recovering_until = None

    def follow(self, feed: Feed, stop: threading.Event) -> None:
        """Reconcile after each change the feed brings and every RESYNC s (and when
        the grace after a store reset ends), from the view's first full read on (a
        part for the store view: ``feed.runs``)."""
        held: dict[str, KeyValue] = {}
        # Nothing before the first Full: an empty view would remove every peer.
        read, wait = False, RESYNC
        while not stop.is_set():
            for update in feed.take(stop, wait):
                mirror(held, update)
                read = read or isinstance(update, Full)
                if isinstance(update, Full) and update.resumed:
                    self.resumed(time.monotonic())
            if not read or stop.is_set():
                continue
            try:
                self.reconcile(held.values())
                wait = self._next_resync(time.monotonic())
            except OSError as e:  # netlink
                log.warning("overlay: %s; keeping what is programmed, retrying", e)
                wait = RETRY


def _describe(sign: str, state: peers.PeerState) -> str:
    return (
        f"{sign}{len(state.fdb)} fdb {sign}{len(state.neighbours)} neighbour "
        f"{sign}{len(state.routes)} route ({', '.join(sorted(r for r, _ in state.routes)) or '-'})"
    )


def _kept_routes(kept: dict[str, PeerState]) -> str:
    return ", ".join(f"{n}: {r}" for n, k in sorted(kept.items()) for r, _ in sorted(k.routes))
