"""Releases that could not reach the store, kept on the host until it answers.

DEL must succeed "to the fullest extent possible": when the store is down, it
still removes the interfaces and writes the release here; the next ADD on
this host and the agent replay it once the store answers. An entry only
releases the attachment it was written for: if the same container ID and
ifname were attached again meanwhile (to another namespace), it is dropped.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from netplug.ipam.allocations import IPAM, IPAMError
from netplug.ipam.store.base import StoreUnavailable

log = logging.getLogger(__name__)


FIELDS = ("network", "containerID", "ifname", "netns")  # an entry, as written and checked


class PendingReleases:
    def __init__(self, run_dir: str, host: str) -> None:
        self.path = Path(run_dir) / host / "pending-releases.jsonl"

    def __bool__(self) -> bool:
        try:
            return self.path.stat().st_size > 0
        except (FileNotFoundError, NotADirectoryError):  # runDir a file: nothing is kept there
            return False

    def record(self, network: str, container_id: str, ifname: str, netns: str) -> None:
        entry = dict(zip(FIELDS, (network, container_id, ifname, netns), strict=True))
        with self._locked() as f:
            f.seek(0, os.SEEK_END)
            f.write(json.dumps(entry) + "\n")
        log.warning(
            "store unreachable: release of %s/%s in %s kept for later",
            container_id,
            ifname,
            network,
        )

    def replay(self, ipam: IPAM) -> int:
        """Apply what the store now accepts; returns how many entries were settled.
        A line that is not an entry (a torn write) is moved to ``<file>.corrupt``."""
        with self._locked() as f:
            entries = [self._entry(line) for line in f.read().splitlines() if line.strip()]
            left = [e for e in entries if e is not None and not self._settle(ipam, e)]
            f.seek(0)
            f.truncate()
            f.writelines(json.dumps(e) + "\n" for e in left)
        return len(entries) - len(left)

    def _entry(self, line: str) -> dict | None:
        try:
            entry = json.loads(line)
            if all(isinstance(entry.get(k), str) for k in FIELDS):
                return entry
        except (ValueError, AttributeError):
            pass
        corrupt = self.path.with_name(self.path.name + ".corrupt")
        log.error("unreadable deferred release %r: moved to %s; release it by hand", line, corrupt)
        with open(corrupt, "a") as f:
            f.write(line + "\n")
        return None

    @staticmethod
    def _settle(ipam: IPAM, entry: dict) -> bool:
        """Whether the entry is done with. An entry written without a namespace (a
        DEL may come without one) releases whatever attachment has its name."""
        try:
            released = ipam.release(
                entry["network"], entry["containerID"], entry["ifname"], entry["netns"]
            )
        except (StoreUnavailable, IPAMError) as e:
            log.info(
                "deferred release of %s/%s kept for later: %s",
                entry["containerID"],
                entry["ifname"],
                e,
            )
            return False
        if released is not None:
            log.info(
                "released %s/%s in %s after the store came back",
                entry["containerID"],
                entry["ifname"],
                entry["network"],
            )
        return True

    @contextmanager
    def _locked(self) -> Iterator:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            yield f
