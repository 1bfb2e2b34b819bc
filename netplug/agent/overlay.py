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
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from netplug.agent import records
from netplug.agent.overlay_plan import Vtep, desired, diff
from netplug.agent.records import BadRecords
from netplug.agent.store_view import Feed, Full, mirror
from netplug.ipam.blocks import Network
from netplug.ipam.store.base import KeyValue
from netplug.net import netns, peers
from netplug.net.links import find
from netplug.net.vxlan import device_name

log = logging.getLogger(__name__)

RESYNC = 10.0
RETRY = 1.0
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
    ) -> None:
        self.host = host
        self.bad_records = bad_records or BadRecords()
        self.on_reconcile = on_reconcile  # counts reconciles (/metrics)

    def reconcile(self, kvs: Iterable[KeyValue]) -> View:
        """Make every local VXLAN device's peers match the records ``kvs``; returns
        the view they make."""
        view = view_of(kvs)
        self.bad_records.report(PART, view.bad)
        self.program(view)
        if self.on_reconcile is not None:
            self.on_reconcile()
        return view

    def program(self, view: View) -> None:
        """The kernel half of ``reconcile``: peers of each network with a local device."""
        with netns.handle() as ipr:
            for network, vteps in view.vteps.items():
                mine = next((v for v in vteps if v.host == self.host), None)
                link = find(ipr, device_name(mine.vni)) if mine else None
                if link is None:
                    continue
                want = desired(self.host, view.live_hosts, vteps, view.blocks.get(network, {}))
                add, remove = diff(peers.read(link.index), want)
                if add or remove:
                    log.info(
                        "network %s: peers %s; %s",
                        network,
                        _describe("+", add),
                        _describe("-", remove),
                    )
                    peers.apply(ipr, link.index, add, remove)

    def follow(self, feed: Feed, stop: threading.Event) -> None:
        """Reconcile after each change the feed brings and every RESYNC s, from the
        view's first full read on (a part for the store view: ``feed.runs``)."""
        held: dict[str, KeyValue] = {}
        # Nothing before the first Full: an empty view would remove every peer.
        read, wait = False, RESYNC
        while not stop.is_set():
            for update in feed.take(stop, wait):
                mirror(held, update)
                read = read or isinstance(update, Full)
            if not read or stop.is_set():
                continue
            try:
                self.reconcile(held.values())
                wait = RESYNC
            except OSError as e:  # netlink
                log.warning("overlay: %s; keeping what is programmed, retrying", e)
                wait = RETRY


def _describe(sign: str, state: peers.PeerState) -> str:
    return (
        f"{sign}{len(state.fdb)} fdb {sign}{len(state.neighbours)} neighbour "
        f"{sign}{len(state.routes)} route ({', '.join(sorted(r for r, _ in state.routes)) or '-'})"
    )
