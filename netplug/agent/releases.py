"""Replaying the releases a store outage deferred (``ipam.pending``), as an agent part.

A DEL that could not reach the store leaves its release in its config's
runDir. This part replays them, in every runDir the agent knows
(``run_dirs``). It follows the store view with no prefixes, so its feed
brings only the view's full reads (at start, and when the store answers
again after a failure): it replays then, and every PENDING_INTERVAL seconds.
"""

from __future__ import annotations

import threading

from netplug.agent.run_dirs import RunDirs
from netplug.agent.store_view import Feed
from netplug.host import Host
from netplug.ipam.pending import PendingReleases

PENDING_INTERVAL = 5.0


class ReleaseReplay:
    def __init__(self, host: Host, run_dirs: RunDirs) -> None:
        self.host = host
        self._run_dirs = run_dirs

    def replay(self) -> None:
        for run_dir in self._run_dirs.all():
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
