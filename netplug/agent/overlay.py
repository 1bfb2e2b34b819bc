"""Keeping this host's VXLAN peers equal to what the store says.

Any change to hosts, VTEPs or blocks triggers a reconcile (read the kernel,
compute the plan, apply the diff), and a full reconcile also runs every
``RESYNC`` seconds and at start, so a restarted agent adds what is missing and
removes what is stale without touching entries that are right. The changes
arrive through ``notice``, fed by the agent's one store watch (the DNS
follower's): a second watch would read and decode every container's events
again only to drop them. When the store is unreachable, what is programmed
stays programmed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from netplug.agent.overlay_plan import Vtep, desired, diff
from netplug.ipam.blocks import Network
from netplug.ipam.schema import Blocks, Hosts, Vteps
from netplug.ipam.store.base import Event, Store, StoreError
from netplug.net import netns, peers
from netplug.net.links import find
from netplug.net.vxlan import device_name

log = logging.getLogger(__name__)

RESYNC = 10.0
STOP_CHECK = 1.0  # seconds between checks for stop while nothing changes
RETRY = 1.0
WATCHED = (Hosts.PREFIX, Vteps.PREFIX, Blocks.PREFIX)


@dataclass(frozen=True, slots=True)
class View:
    live_hosts: set[str]
    vteps: dict[str, list[Vtep]]  # by network
    blocks: dict[str, dict[Network, str]]  # by network: block -> host


def read_view(store: Store) -> View:
    """Hosts, VTEPs and blocks of every network, from the store. Raises the
    schema's SchemaError on a key or record it cannot read."""
    live = {Hosts.parse(kv.key) for kv in store.range(Hosts.PREFIX, prefix=True).kvs}
    vteps: dict[str, list[Vtep]] = defaultdict(list)
    for kv in store.range(Vteps.PREFIX, prefix=True).kvs:
        network, host = Vteps.parse(kv.key)
        vteps[network].append(Vtep(network, host, *Vteps.decode(kv.value)))
    blocks: dict[str, dict[Network, str]] = defaultdict(dict)
    for kv in store.range(Blocks.PREFIX, prefix=True).kvs:
        network, block = Blocks.parse(kv.key)
        blocks[network][block] = Blocks.decode(kv.value)
    return View(live, dict(vteps), dict(blocks))


class Overlay:
    def __init__(
        self,
        store: Store,
        host: str,
        on_view: Callable[[View], None] | None = None,
        trust: Callable[[], object] | None = None,
    ) -> None:
        self.store, self.host = store, host
        self.on_view = on_view  # told every view reconciled (the agent's DNS follows it)
        # Raises StoreError when the store must not be followed (it was reset): an
        # emptied store would otherwise remove every peer and DNS listener.
        self.trust = trust
        self._changed = threading.Event()

    def reconcile(self) -> View:
        """Make every local VXLAN device's peers match the store; returns what was read."""
        if self.trust is not None:
            self.trust()
        view = read_view(self.store)
        with netns.handle() as ipr:
            for network, vteps in view.vteps.items():
                mine = next((v for v in vteps if v.host == self.host), None)
                link = find(ipr, device_name(mine.vni)) if mine else None
                if link is None:
                    continue
                want = desired(self.host, view.live_hosts, vteps, view.blocks.get(network, {}))
                add, remove = diff(peers.read(ipr, link.index), want)
                if add or remove:
                    log.info(
                        "network %s: peers %s; %s",
                        network,
                        _describe("+", add),
                        _describe("-", remove),
                    )
                    peers.apply(ipr, link.index, add, remove)
        if self.on_view is not None:
            self.on_view(view)
        return view

    def notice(self, batch: Sequence[Event] | None) -> None:
        """A batch of store events (from any thread): reconcile if it touches the
        overlay. None: the watcher read the store afresh, so reconcile too."""
        if batch is None or any(event.kv.key.startswith(WATCHED) for event in batch):
            self._changed.set()

    def follow(self, stop: threading.Event) -> None:
        """Reconcile at start, after every noticed change, and every RESYNC s."""
        while not stop.is_set():
            # Cleared before the read: a change that lands during the
            # reconcile triggers another one rather than being lost.
            self._changed.clear()
            try:
                self.reconcile()
            except (StoreError, OSError) as e:
                log.warning("overlay: %s; keeping what is programmed, retrying", e)
                stop.wait(RETRY)
                continue
            self._wait_for_change(stop)

    def _wait_for_change(self, stop: threading.Event) -> None:
        """Return on a noticed change, at the next resync, or soon after ``stop``."""
        resync_at = time.monotonic() + RESYNC
        while not stop.is_set() and not self._changed.wait(STOP_CHECK):
            if time.monotonic() >= resync_at:
                return


def _describe(sign: str, state: peers.PeerState) -> str:
    return (
        f"{sign}{len(state.fdb)} fdb {sign}{len(state.neighbours)} neighbour "
        f"{sign}{len(state.routes)} route ({', '.join(sorted(r for r, _ in state.routes)) or '-'})"
    )
