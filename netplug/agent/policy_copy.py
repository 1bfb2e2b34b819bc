"""The host's copy of the store's policies, kept by an agent part.

Policies belong to no host: after a store reset, no host's own records bring
them back, and a policy that confined a container (``"ingress": []``) would be
gone with it. So each host keeps the policies it last read
(``cni.local_records.write_policies``, in every runDir the agent knows), and
``netplugctl recover`` writes them back (``ipam.policies.restore``). The part
follows the policy records; a runDir learnt later gets the copy within
REWRITE_INTERVAL. Without an agent, each ADD's and DEL's programming of the
table keeps the copy (``cni.segmentation.refresh``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from netplug.agent.run_dirs import RunDirs
from netplug.agent.store_view import Feed, mirror
from netplug.cni import local_records
from netplug.ipam import policies
from netplug.ipam.schema import Policies
from netplug.ipam.store.base import KeyValue

log = logging.getLogger(__name__)

WATCHED = (Policies.PREFIX,)
REWRITE_INTERVAL = 30.0  # seconds: when a runDir learnt since the last change gets the copy


class PolicyCopy:
    def __init__(self, host: str, run_dirs: RunDirs) -> None:
        self.host = host
        self._run_dirs = run_dirs
        self._failing: set[str] = set()  # runDirs the copy cannot be written in (logged)

    def follow(self, feed: Feed, stop: threading.Event) -> None:
        """Keep the copy equal to the store's policy records (a store view part)."""
        records: dict[str, KeyValue] = {}
        fed = False  # nothing is kept before the first full read: it may be empty
        while not stop.is_set():
            updates = feed.take(stop, REWRITE_INTERVAL)
            for update in updates:
                mirror(records, update)
            fed = fed or bool(updates)
            if fed and not stop.is_set():
                self.keep(records.values())

    def keep(self, records: Iterable[KeyValue]) -> None:
        """Write the copy in every runDir; one that fails (read-only, full) is logged
        once until it works again, and spares the others."""
        documents = policies.documents(filter(None, map(policies.readable, records)))
        for run_dir in self._run_dirs.all():
            try:
                local_records.write_policies(run_dir, self.host, documents)
            except OSError as e:
                if run_dir not in self._failing:
                    log.warning("cannot keep the policy copy in %s: %s", run_dir, e)
                self._failing.add(run_dir)
            else:
                self._failing.discard(run_dir)
