"""This host's report of the policies it enforces: in the store, and for /metrics.

A supervised loop. Every PERIOD seconds, and at once when woken (the
enforcer's state changed), it reads the table's counters (one ``nft`` exec)
and writes the host's record (``ipam.enforcement``: the policy revision in
force, the counters, the enforcer's error) when it differs from the one last
written, under the host record's lease as it is now: after a re-registration
(a new lease, the old record gone with the old one) it is written again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from netplug.agent.enforcement import Enforcement
from netplug.ipam import enforcement
from netplug.ipam.schema import EnforcementRecord
from netplug.ipam.store.base import Store, StoreError
from netplug.net import NetError, policy_table
from netplug.policy.plan import TABLE
from netplug.policy.report import HostCounters, from_listing

log = logging.getLogger(__name__)

PERIOD = 2.0  # seconds between two readings of the counters


class PolicyReport:
    def __init__(self, store: Store, host: str, state: Callable[[], Enforcement]) -> None:
        self.store, self.host, self._state = store, host, state
        self.counters = HostCounters()  # the last reading (swapped whole): /metrics reads it
        self._wake = threading.Event()
        self._written: tuple[int, EnforcementRecord] | None = None  # (lease, record)
        self._failing = ""  # the last error writing or reading, logged once

    def wake(self) -> None:
        """Report now rather than at the end of the period (from any thread)."""
        self._wake.set()

    def run(self, lease: Callable[[], int], stop: threading.Event) -> None:
        """Report until ``stop``, under the lease ``lease()`` gives at each write."""
        while not stop.is_set():
            self._wake.clear()
            self.once(lease())
            self._wake.wait(PERIOD)

    def once(self, lease: int) -> None:
        """Read the counters; write the record if it changed (errors are logged once)."""
        try:
            listing = policy_table.counters(TABLE)
            self.counters = HostCounters() if listing is None else from_listing(listing)
            state = self._state()
            record = EnforcementRecord(state.revision, self.counters, state.error)
            if self._written != (lease, record):
                enforcement.write(self.store, self.host, record, lease)
                self._written = (lease, record)
        except (NetError, StoreError) as e:
            if str(e) != self._failing:
                log.warning("policy report: %s; trying again every %.0f s", e, PERIOD)
            self._failing = str(e)
            return
        if self._failing:
            log.info("policy report: written again")
        self._failing = ""
