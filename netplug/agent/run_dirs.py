"""The runDirs an agent knows: its own (``--run-dir``, the configs' default) and
each one a plugin call it served named (told by the plugin server). Parts
that keep files for the host (deferred releases, the policy copy) work in each."""

from __future__ import annotations

import threading
from collections.abc import Iterable


class RunDirs:
    def __init__(self, known: Iterable[str] = ()) -> None:
        self._known = set(known)
        self._lock = threading.Lock()

    def learn(self, run_dir: str) -> None:
        """Remember the runDir of a call the agent serves (from any thread)."""
        with self._lock:
            self._known.add(run_dir)

    def all(self) -> list[str]:
        with self._lock:
            return sorted(self._known)
