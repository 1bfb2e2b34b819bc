"""Failure injection at named points of a CNI call: the seam the rollback tests use.

Honoured only when the environment of the process that runs the call (the
plugin, or netplugd) sets ``NETPLUG_FAULTS``: a comma-separated list of point
names, each failing with the point's own error, or with RuntimeError (an
unexpected error, a bug) when suffixed ``:bug``. Unset, a point costs one
lookup in the environment. Point names:

- ``STEP`` fails before ADD's step ``STEP``, ``STEP.after`` once the step has
  done its work (steps: ``ensure_bridge``, ``enable_forwarding``,
  ``create_pair``, ``configure_container``, ``masq``);
- ``create_pair.linked``: after the kernel made the veth pair, before it is
  set up;
- ``undo WHAT``: the undo step ``WHAT`` of a failed ADD (``delete veth``, ...);
- ``release``: releasing addresses, as if the store could not be reached;
- netplugd's parts, each time one takes updates from the store view (the
  view itself, ``store-view``: at each full read): ``overlay``,
  ``dns-registry``, ``dns-listeners``, ``pending-releases``.

``POINT*N`` fails only the first N times the process reaches ``POINT``: a
part under netplugd's supervisor then fails N runs and recovers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

ENV = "NETPLUG_FAULTS"
T = TypeVar("T")

_reached: dict[str, int] = {}  # how often this process reached each counted point
_lock = threading.Lock()


def check(point: str, error: type[Exception]) -> None:
    """Raise ``error`` (RuntimeError for ``POINT:bug``) when ``NETPLUG_FAULTS`` names ``point``."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        name, _, kind = item.strip().partition(":")
        name, counted, times = name.partition("*")
        if name == point and (not counted or _count(point, times)):
            raise (RuntimeError if kind == "bug" else error)(f"injected failure in {point}")


def _count(point: str, times: str) -> bool:
    """Whether a ``POINT*times`` point fails this time (its first ``times`` visits)."""
    if not times.isdigit():
        raise ValueError(f"{ENV}: expected {point}*COUNT, got {point}*{times}")
    with _lock:
        _reached[point] = _reached.get(point, 0) + 1
        return _reached[point] <= int(times)


def forget() -> None:
    """Count every ``POINT*N`` afresh (for tests that run in one process)."""
    with _lock:
        _reached.clear()


def step(point: str, error: type[Exception], func: Callable[..., T], *args: object) -> T:
    """``func(*args)`` between the points ``point`` and ``point.after``."""
    check(point, error)
    result = func(*args)
    check(f"{point}.after", error)
    return result
