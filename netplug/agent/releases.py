"""Replaying the releases a store outage deferred (``ipam.pending``), as an agent part.

A DEL that could not reach the store leaves its release in its config's
runDir. This part replays them, in every runDir it knows: the agent's own
(``--run-dir``, the configs' default) and each one a plugin call it served
named (``learn``, wired to the plugin server in ``daemon.py``). It follows the
store view with no prefixes, so its feed brings only the view's full reads
(at start, and when the store answers again after a failure): it replays
then, and every PENDING_INTERVAL seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from netplug.agent.store_view import Feed
from netplug.host import Host
from netplug.ipam.pending import PendingReleases

PENDING_INTERVAL = 5.0


class ReleaseReplay:
    def __init__(self, host: Host, run_dirs: Iterable[str] = ()) -> None:
        self.host = host
        self._run_dirs = set(run_dirs)
        self._lock = threading.Lock()

    def learn(self, run_dir: str) -> None:
        """Remember the runDir of a call the agent serves (from any thread)."""
        with self._lock:
            self._run_dirs.add(run_dir)

    def replay(self) -> None:
        with self._lock:
            run_dirs = sorted(self._run_dirs)
        for run_dir in run_dirs:
            pending = PendingReleases(run_dir, self.host.name)
            if pending:
                pending.replay(self.host.ipam)

    def follow(self, feed: Feed, stop: threading.Event) -> None:
        """Replay after each full read of the store and every PENDING_INTERVAL s
        (a store view part; what it raises ends the run, not the replays)."""
        while not stop.is_set():
            feed.take(stop, PENDING_INTERVAL)
            if not stop.is_set():
                self.replay()
