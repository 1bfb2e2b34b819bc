"""Running the agent's long-lived loops so that none can die silently.

A loop is ``target(stop)``: it runs until the ``threading.Event`` it is given
is set. The supervisor runs each loop in a thread of its own. A loop that
raises, or returns before it was told to stop, is logged with its traceback,
counted, and started again after a backoff that doubles up to a bound (so a
loop that fails on every run costs a log line every ``Backoff.maximum``
seconds, not a busy thread). It counts as failing, and the agent as
degraded, from the failure until its new run has lasted
``Backoff.stable_after`` seconds, which also resets the backoff.

``LoopHealth`` and ``Backoff`` are plain values over the times they are given
(no clock, no thread): the bookkeeping is tested without either.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)

Target = Callable[[threading.Event], None]

OK, FAILING, STOPPED = "ok", "failing", "stopped"


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.5  # seconds before the first restart
    maximum: float = 10.0  # the bound the doubling stops at
    stable_after: float = 5.0  # a run this long clears a failure and resets the delay

    def next_delay(self, previous: float | None, ran_for: float) -> float:
        """The pause before a restart, after a run of ``ran_for`` seconds that
        followed a pause of ``previous`` (None: the loop never failed before);
        a stable run starts the doubling over."""
        if previous is None or ran_for >= self.stable_after:
            return self.initial
        return min(self.maximum, previous * 2)


@dataclass(frozen=True, slots=True)
class LoopHealth:
    """One loop's record; each change returns a new one (monotonic seconds)."""

    name: str
    running_since: float | None = None  # None: waiting to restart, or stopped
    restarts: int = 0
    last_error: str = ""
    failed_at: float | None = None  # the last failure not yet outlived by a stable run

    def started(self, now: float) -> LoopHealth:
        restarts = self.restarts + (self.failed_at is not None)
        return replace(self, running_since=now, restarts=restarts)

    def failed(self, now: float, error: str) -> LoopHealth:
        return replace(self, running_since=None, last_error=error, failed_at=now)

    def stopped(self) -> LoopHealth:
        return replace(self, running_since=None)

    def state(self, now: float, stable_after: float) -> str:
        if self.failed_at is not None:
            stable = self.running_since is not None and now - self.running_since >= stable_after
            return OK if stable else FAILING
        return OK if self.running_since is not None else STOPPED

    def report(self, now: float, stable_after: float) -> dict:
        """What /healthz and ``netplugctl status`` show of this loop."""
        state = self.state(now, stable_after)
        report: dict = {"state": state, "restarts": self.restarts}
        if self.last_error:
            report["lastError"] = self.last_error
        if state == FAILING and self.failed_at is not None:
            report["failingFor"] = round(now - self.failed_at, 1)
        return report


def overall(
    reports: dict[str, dict], store_refused: bool = False, enforcement_failing: bool = False
) -> str:
    """``ok``, or ``degraded`` while any loop fails (a stopped agent is not degraded),
    the store was reset or is corrupt (an outage is not: it heals by itself), or
    the kernel refuses netplug's table."""
    failing = any(r["state"] == FAILING for r in reports.values())
    return "degraded" if failing or store_refused or enforcement_failing else OK


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class LoopExited(Exception):
    """A loop returned although it was not told to stop."""


class Supervisor:
    """Runs named loops, each restarted with backoff when it fails; see the module."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff()
        self._stop = threading.Event()
        self._health: dict[str, LoopHealth] = {}  # each value swapped whole by its loop's thread
        self._threads: list[threading.Thread] = []

    def start(self, name: str, target: Target) -> None:
        """Run ``target(stop)`` in a thread named ``name``, under supervision."""
        if name in self._health:
            raise ValueError(f"a loop named {name} runs already")
        self._health[name] = LoopHealth(name)
        thread = threading.Thread(target=self._run, args=(name, target), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def health(self) -> dict[str, dict]:
        """Each loop's report, by name."""
        now = time.monotonic()
        loops = dict(self._health)  # one copy (atomic): start() may add a loop meanwhile
        return {
            name: health.report(now, self.backoff.stable_after)
            for name, health in sorted(loops.items())
        }

    def stop(self, timeout: float) -> None:
        """Tell every loop to stop and wait for them, ``timeout`` seconds in all."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("loop %s did not stop within %.0f s", thread.name, timeout)

    def _run(self, name: str, target: Target) -> None:
        delay: float | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            self._health[name] = self._health[name].started(started)
            try:
                target(self._stop)
                if self._stop.is_set():
                    break
                raise LoopExited("returned before the agent stopped")
            except Exception as e:  # the point of a supervisor: any failure, logged and retried
                now = time.monotonic()
                delay = self.backoff.next_delay(delay, now - started)
                self._health[name] = self._health[name].failed(now, describe(e))
                log.error("loop %s failed; restarting in %.1f s", name, delay, exc_info=True)
                self._stop.wait(delay)
        self._health[name] = self._health[name].stopped()
