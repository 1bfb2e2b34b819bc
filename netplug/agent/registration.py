"""This host's record in the store, alive as long as its agent renews the lease.

Other hosts program VXLAN peers only toward hosts whose record exists, so a
dead agent's host drops out once its lease expires. A second agent that
claims a live host name refuses to start, unless the record is its own
predecessor's: same machine (boot id) and same network namespace, as after a
crash and restart, when it takes the record over at once instead of waiting
for the old lease to run out. A stopping agent leaves its lease to expire
rather than revoking it, so a restart (clean or not) never makes the other
hosts drop this one; ``netplugctl hosts remove`` removes a host at once.

The agent also follows its own record (``follow``, a store view part) and
registers again as soon as the record is gone from the store it follows: after
the store was reset and this host ran ``netplugctl recover`` (the reset took
every lease), or after the record was removed. The other hosts program no
peers toward a host without a record; waiting for the lease's renewal to fail
would keep this host cut off for up to a third of the TTL, or two.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from netplug.agent.store_view import Delta, Feed, Full, Update
from netplug.ipam.schema import HostRecord, Hosts
from netplug.ipam.store.base import (
    Compare,
    Get,
    KeyValue,
    LeaseNotFound,
    Put,
    Store,
    StoreError,
)

log = logging.getLogger(__name__)

DEFAULT_TTL = 10.0
IDLE = 5.0  # seconds ``follow`` waits on its feed at a time


class HostNameTaken(Exception):
    pass


def instance_id() -> str:
    """Who this agent is: the machine's boot and this network namespace."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{boot}/{os.stat('/proc/thread-self/ns/net').st_ino}"


class HostRegistration:
    def __init__(
        self,
        store: Store,
        host: str,
        vtep: str,
        ttl: float = DEFAULT_TTL,
        trust: Callable[[], object] | None = None,
    ) -> None:
        self.store, self.host, self.vtep, self.ttl = store, host, vtep, ttl
        # Raises StoreError for a store this host must not write to (it was reset
        # and this host has not recovered): registering there would tell the other
        # hosts' agents that this one recovered, and they would stop carrying its
        # records (``reset_carry``). The view's first read after the recover
        # has it register again (``follow``).
        self._trust = trust
        self.instance = instance_id()
        self.lease = 0
        self._registering = threading.Lock()
        self._failing = ""  # the last error registering again, logged once

    def acquire(self) -> None:
        """Write the host record under a new lease; raises HostNameTaken."""
        key = Hosts.key(self.host)
        record = Hosts.encode(HostRecord(self.vtep, self.instance, int(time.time())))
        for _ in range(3):
            lease = self.store.grant(self.ttl)
            done = self.store.txn([Compare.absent(key)], [Put(key, record, lease)], [Get(key)])
            if done.succeeded:
                self.lease = lease
                return
            (held,) = done.responses[0] or [None]
            if held is not None and self._take_over(held, record, lease):
                return
            self.store.revoke(lease)
        raise HostNameTaken(f"could not register host {self.host}: the record keeps changing")

    def _take_over(self, held: KeyValue, record: bytes, lease: int) -> bool:
        """Move our predecessor's record to ``lease`` in one put: revoking its lease
        first would delete the record, and every other host would drop this one
        from the overlay until the new record arrived. Raises HostNameTaken (our
        lease revoked) when the record is another live agent's; False when it
        changed meanwhile."""
        holder = Hosts.decode(held.value).instance
        if holder != self.instance:
            self.store.revoke(lease)
            raise HostNameTaken(
                f"host name {self.host} is held by another live netplugd "
                f"({holder or None}); stop it, or wait "
                f"{self.ttl:.0f} s after it died, or use another --host-name"
            )
        moved = self.store.txn([Compare.unchanged(held)], [Put(held.key, record, lease)])
        if not moved.succeeded:
            return False
        log.info("took over the host record of this host's previous agent")
        self.store.revoke(held.lease)  # no key left on it: deletes nothing
        self.lease = lease
        return True

    def keep_alive(self, stop: threading.Event) -> None:
        """Renew the lease every third of its TTL until ``stop``; re-register after an
        outage long enough for the lease to expire."""
        while not stop.wait(self.ttl / 3):
            try:
                self.store.keepalive(self.lease)
            except LeaseNotFound:
                log.warning("host lease expired (store outage?): registering again")
                self._reacquire()
            except StoreError as e:
                log.warning("could not renew the host lease: %s", e)

    def follow(self, feed: Feed, stop: threading.Event) -> None:
        """Register again whenever the store view shows this host's record gone
        (a store view part; see the module)."""
        key = Hosts.key(self.host)
        present = True  # acquire() put it before the view started
        while not stop.is_set():
            updates = feed.take(stop, IDLE)
            present = record_present(present, updates, key)
            if updates and not present and not stop.is_set():
                log.warning("host record gone from the store: registering again")
                self._reacquire()

    def _reacquire(self) -> None:
        with self._registering:  # the lease's renewal may find it gone at the same time
            try:
                if self._trust is not None:
                    self._trust()
                self.acquire()
            except (StoreError, HostNameTaken) as e:
                if str(e) != self._failing:
                    log.error("could not register again: %s", e)
                self._failing = str(e)
                return
            self._failing = ""


def record_present(present: bool, updates: Iterable[Update], key: str) -> bool:
    """Whether the record under ``key`` is in the store after ``updates``, given
    whether it was before them (pure): a Full says it anew, a Delta's last event on
    ``key`` decides."""
    for update in updates:
        if isinstance(update, Full):
            present = any(kv.key == key for kv in update.kvs)
        elif isinstance(update, Delta):
            for event in update.events:
                if event.kv.key == key:
                    present = event.type == "put"
    return present
