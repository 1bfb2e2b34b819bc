"""What the store view of one host carries over a store reset: the records
(``reset_carry`` decides which), until when, and their copy on the host
(``CarryFile``), kept so that an agent restarted while the hosts recover
carries on. Thread-safe: the view's watch thread changes it, its readers ask
``report`` from theirs. The copy is written outside any lock and at most every
SAVE_INTERVAL while the carry shrinks (a large carry is megabytes).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping

from netplug.agent import reset_carry
from netplug.agent.carry_file import CarryFile
from netplug.agent.reset_carry import Carried
from netplug.ipam.store.base import Event, KeyValue

log = logging.getLogger(__name__)

SAVE_INTERVAL = 5.0  # seconds at least between two saves of a shrinking carry


class ResetCarrier:
    def __init__(self, host: str, grace: float, file: CarryFile | None = None) -> None:
        self.host, self.grace, self._file = host, grace, file
        self._lock = threading.Lock()
        self._carry: Carried = {}
        self._until = 0.0  # monotonic: when the grace ends
        self._since = 0.0  # wall clock: when it began (saved, for a restarted agent)
        self._unsaved = False
        self._saved_at = -math.inf  # monotonic

    def __bool__(self) -> bool:
        return bool(self._carry)

    # -- changes (the view's watch thread, under the view's lock) -------------------

    def begin(self, before: Mapping[str, KeyValue], read: Mapping[str, KeyValue]) -> None:
        """The first read after this host recovered (``read``): carry the records of
        ``before`` (the last read before the reset) that it does not speak for."""
        self._begin(before, read, None, time.time(), "")

    def resume_saved(self, read: Mapping[str, KeyValue]) -> None:
        """An agent's first read: carry on from the saved carry, if there is one."""
        kept = self._file.load() if self._file is not None else None
        if kept is not None:
            suffix = " (as saved before this agent started)"
            self._begin(kept.records, read, kept.since, kept.saved, suffix)

    def _begin(
        self,
        before: Mapping[str, KeyValue],
        read: Mapping[str, KeyValue],
        since: float | None,
        saved: float,
        said: str,
    ) -> None:
        now = time.time()
        left = reset_carry.grace_left(self.grace, now, since, saved)
        carry = reset_carry.carried(before, read, self.host) if left > 0 else {}
        with self._lock:
            self._carry, self._since = carry, now if since is None else since
            self._until = time.monotonic() + left
            self._unsaved, self._saved_at = True, -math.inf  # saved at once
        if carry:
            log.warning(
                "store view: the store was reset: carrying the records of the hosts that "
                "have not recovered yet (%s) for up to %.0f s%s: run `netplugctl recover` on them",
                counted(carry),
                left,
                said,
            )
        elif left <= 0:
            log.warning(
                "store view: dropping the records saved at a store reset: their grace "
                "(%.0f s) ran out",
                self.grace,
            )

    def refresh(self, read: Mapping[str, KeyValue]) -> None:
        """Another full read while carrying (``reset_carry.refresh``)."""
        with self._lock:
            if self._carry:
                reset_carry.refresh(self._carry, read)
                self._unsaved = True

    def settle(self, events: Iterable[Event], revision: int) -> list[Event]:
        """A batch of the store's events while carrying: the deletes of what is
        carried no more (``reset_carry.settle``)."""
        with self._lock:
            if not self._carry:
                return []
            gone = reset_carry.settle(self._carry, events, revision)
            self._unsaved = True
            ended = not self._carry
        if ended:
            log.info("store view: every host is back in the store after its reset")
        return gone

    def expired(self) -> Carried:
        """What was still carried when the grace ended (let go of now); {} before."""
        with self._lock:
            if not self._carry or time.monotonic() < self._until:
                return {}
            gone, self._carry, self._unsaved = self._carry, {}, True
        log.warning(
            "store view: dropping the records of the hosts that did not recover within "
            "%.0f s of the store reset (%s)",
            self.grace,
            counted(gone),
        )
        return gone

    def flat(self) -> dict[str, KeyValue]:
        with self._lock:
            return reset_carry.flat(self._carry)

    # -- the copy on the host (no lock of the view held) ----------------------------

    def keep_before_reset(self, mirror: Mapping[str, KeyValue]) -> None:
        """The view's last read (``mirror``), when it first found the store reset:
        the other hosts' records, saved for an agent that starts after this host
        recovered."""
        with self._lock:
            self._unsaved = False  # what an earlier carry had left to save is older
        if self._file is not None:
            self._file.save(reset_carry.flat(reset_carry.by_owner(mirror, self.host)))

    def save(self) -> None:
        """Save the carry as it is now (removed once empty), if it changed since
        the last save and that was SAVE_INTERVAL ago (at once after ``begin``)."""
        with self._lock:
            due = self._unsaved and time.monotonic() - self._saved_at >= SAVE_INTERVAL
            if not due:
                return
            records, since = reset_carry.flat(self._carry), self._since
            self._unsaved, self._saved_at = False, time.monotonic()
        if self._file is None:
            return
        if records:
            self._file.save(records, since)
        else:
            self._file.remove()

    # -- health ---------------------------------------------------------------------

    def report(self) -> dict:
        """``carried`` (records per host) and ``carriedFor`` (seconds left), or {}."""
        with self._lock:
            if not self._carry:
                return {}
            left = max(round(self._until - time.monotonic()), 0)
            return {
                "carried": {h: len(r) for h, r in sorted(self._carry.items())},
                "carriedFor": left,
            }


def counted(carry: Carried) -> str:
    return ", ".join(f"{host}: {len(records)} record(s)" for host, records in sorted(carry.items()))
