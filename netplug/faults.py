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
- ``release``: releasing addresses, as if the store could not be reached.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

ENV = "NETPLUG_FAULTS"
T = TypeVar("T")


def check(point: str, error: type[Exception]) -> None:
    """Raise ``error`` (RuntimeError for ``POINT:bug``) when ``NETPLUG_FAULTS`` names ``point``."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        name, _, kind = item.strip().partition(":")
        if name == point:
            raise (RuntimeError if kind == "bug" else error)(f"injected failure in {point}")


def step(point: str, error: type[Exception], func: Callable[..., T], *args: object) -> T:
    """``func(*args)`` between the points ``point`` and ``point.after``."""
    check(point, error)
    result = func(*args)
    check(f"{point}.after", error)
    return result
