"""Named failure points in the agent's parts, armed from the environment.

``NETPLUGD_FAULTS="overlay=3,dns-listeners=1"`` makes the named part raise
``InjectedFault`` at its next 3 (1) updates (``store-view``: at its next full
reads), as a bug in it would: the tests kill a part's loop this way in a real
agent and watch the supervisor restart it while the other parts keep serving.
Unset (always, outside tests), ``hit`` is a dictionary lookup that finds nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

ENV = "NETPLUGD_FAULTS"


class InjectedFault(RuntimeError):
    """Raised by an armed failure point."""


class Faults:
    def __init__(self, armed: Mapping[str, int] | None = None) -> None:
        self._left = dict(armed or {})
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Faults:
        """The failure points ``environ[ENV]`` arms; ValueError for a malformed value."""
        armed = {}
        for item in filter(None, environ.get(ENV, "").split(",")):
            name, sep, count = item.partition("=")
            if not sep or not name.strip() or not count.strip().isdigit():
                raise ValueError(f"{ENV}: expected NAME=COUNT[,NAME=COUNT...], got {item!r}")
            armed[name.strip()] = int(count)
        return cls(armed)

    def hit(self, name: str) -> None:
        """Raise InjectedFault if ``name`` is armed (using up one of its counts)."""
        if not self._left:
            return
        with self._lock:
            left = self._left.get(name, 0)
            if left <= 0:
                return
            self._left[name] = left - 1
        raise InjectedFault(f"injected into {name} ({left - 1} more to come)")
