"""This host's report of the policies it enforces: in the store, and for /metrics.

A supervised loop. Every PERIOD seconds, and at once when woken (the
enforcer's state changed), it reads the table's counters (one ``nft`` exec:
/metrics shows this reading) and writes the host's record (``ipam.enforcement``:
the policy revision in force, the counters, the enforcer's error) under the host
record's lease as it is now (``due`` decides when): a new revision or error at
once, counters that only moved at most every COUNTERS_PERIOD seconds, since they
move on every packet and each write is a watch event for every agent that
follows the prefix; after a re-registration (a new lease, the old record gone
with the old one) it is written again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from netplug.agent.enforcement import Enforcement
from netplug.ipam import enforcement
from netplug.ipam.schema import EnforcementRecord
from netplug.ipam.store.base import Store, StoreError
from netplug.net import NetError, policy_table
from netplug.policy.plan import TABLE
from netplug.policy.report import HostCounters, from_listing

log = logging.getLogger(__name__)

PERIOD = 2.0  # seconds between two readings of the counters
COUNTERS_PERIOD = 30.0  # seconds at least between two writes for counters alone


@dataclass(frozen=True, slots=True)
class Written:
    lease: int
    record: EnforcementRecord
    at: float  # monotonic seconds


def due(
    last: Written | None, lease: int, record: EnforcementRecord, now: float, period: float
) -> bool:
    """Whether ``record`` goes to the store now: nothing written yet under ``lease``,
    or a revision or error other than the last one's (the status others act on),
    or counters that moved, ``period`` seconds after the last write."""
    if last is None or last.lease != lease:
        return True
    if (record.revision, record.error) != (last.record.revision, last.record.error):
        return True
    return record.counters != last.record.counters and now - last.at >= period


class PolicyReport:
    def __init__(
        self,
        store: Store,
        host: str,
        state: Callable[[], Enforcement],
        counters_period: float = COUNTERS_PERIOD,
    ) -> None:
        self.store, self.host, self._state = store, host, state
        self.counters_period = counters_period
        self.counters = HostCounters()  # the last reading (swapped whole): /metrics reads it
        self._wake = threading.Event()
        self._written: Written | None = None
        self._failing = ""  # the last error writing or reading, logged once

    def wake(self) -> None:
        """Report now rather than at the end of the period (from any thread)."""
        self._wake.set()

    def run(self, lease: Callable[[], int], stop: threading.Event) -> None:
        """Report until ``stop``, under the lease ``lease()`` gives at each write."""
        while not stop.is_set():
            self._wake.clear()
            self.once(lease(), time.monotonic())
            self._wake.wait(PERIOD)

    def once(self, lease: int, now: float) -> None:
        """Read the counters; write the record when ``due`` (errors are logged once)."""
        try:
            listing = policy_table.counters(TABLE)
            self.counters = HostCounters() if listing is None else from_listing(listing)
            state = self._state()
            record = EnforcementRecord(state.revision, self.counters, state.error)
            if due(self._written, lease, record, now, self.counters_period):
                enforcement.write(self.store, self.host, record, lease)
                self._written = Written(lease, record, now)
        except (NetError, StoreError) as e:
            if str(e) != self._failing:
                log.warning("policy report: %s; trying again every %.0f s", e, PERIOD)
            self._failing = str(e)
            return
        if self._failing:
            log.info("policy report: written again")
        self._failing = ""
