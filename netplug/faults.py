"""Failure injection at named points of a CNI call: the seam the rollback tests use.

Honoured only when the environment of the process that runs the call (the
plugin, or netplugd) sets ``NETPLUG_FAULTS``: a comma-separated list of point
names, each failing with the point's own error, or with RuntimeError (an
unexpected error, a bug) when suffixed ``:bug``. Unset, a point costs one
lookup in the environment. Point names:

- ``STEP`` fails before ADD's step ``STEP``, ``STEP.after`` once the step has
  done its work (steps: ``ensure_bridge``, ``enable_forwarding``, ``enforce``,
  ``drop_early_packets``, ``create_pair``, ``configure_container``,
  ``learn_container``, ``masq``);
- ``create_pair.linked``: after the kernel made the veth pair, before it is
  set up;
- ``undo WHAT``: the undo step ``WHAT`` of a failed ADD (``delete veth``, ...);
- ``release``: releasing addresses, as if the store could not be reached;
- ``forget_container``: DEL's (and GC's) deletion of the bridge's neighbour
  entries for a container, as if the kernel refused it: DEL answers the error
  and keeps the container's local record, GC the attachment in the store, so
  that the retry deletes them;
- ``policy-table``: every ``nft`` batch on netplug's table (``net.policy_table``),
  as if the kernel refused the rules: netplugd's enforcer then reports itself
  failing and retries with backoff (an ADD that must program the table fails);
- ``conntrack``: deleting conntrack entries (``net.conntrack.forget``), as if
  the kernel refused: DEL logs it and still succeeds;
- netplugd's parts, each time one takes updates from the store view (the
  view itself, ``store-view``: at each full read): ``overlay``, ``enforcer``,
  ``dns-registry``, ``dns-listeners``, ``pending-releases``, ``policy-copy``,
  ``host-record``;
  ``agent-start``: netplugd exits (status 1) before it serves, as an agent that
  cannot start.

``POINT*N`` fails only the first N times the process reaches ``POINT``: a
part under netplugd's supervisor then fails N runs and recovers.

The spec is parsed once per process (once per value, for tests that change
it): netplugd checks it at start-up and refuses to start on a malformed one,
the plugin answers a CNI error (code 4) before it changes anything; both log
a WARNING when faults are armed.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

ENV = "NETPLUG_FAULTS"
T = TypeVar("T")
FORM = "POINT[*COUNT][:bug] items separated by commas"
_ITEM = re.compile(r"(?P<point>[a-z][a-z0-9_. -]*?)(?:\*(?P<times>[0-9]+))?(?::(?P<bug>bug))?")

_reached: dict[str, int] = {}  # how often this process reached each counted point
_lock = threading.Lock()
_parsed: tuple[str, tuple[Fault, ...]] | None = None  # (spec, its faults): parsed once


class FaultSpecError(ValueError):
    """``NETPLUG_FAULTS`` does not read; the message names the item and the form."""


@dataclass(frozen=True, slots=True)
class Fault:
    point: str
    times: int | None = None  # fail the first ``times`` visits; None: every one
    bug: bool = False  # raise RuntimeError (a bug) instead of the point's own error


def parse(spec: str) -> tuple[Fault, ...]:
    """The faults of a spec (see the module). Raises FaultSpecError."""
    faults = []
    for item in spec.split(","):
        found = _ITEM.fullmatch(item.strip())
        if found is None:
            raise FaultSpecError(f"{ENV}: expected {FORM}, got {item.strip()!r} in {spec!r}")
        times = None if found["times"] is None else int(found["times"])
        faults.append(Fault(found["point"], times, bool(found["bug"])))
    return tuple(faults)


def armed() -> tuple[Fault, ...]:
    """The faults this process's environment arms (none when unset), parsed once
    per value. Raises FaultSpecError for a malformed spec."""
    global _parsed
    spec = os.environ.get(ENV, "")
    if not spec.strip():
        return ()
    parsed = _parsed
    if parsed is None or parsed[0] != spec:
        parsed = _parsed = (spec, parse(spec))
    return parsed[1]


def notice() -> str:
    """The WARNING to log once when faults are armed ("": none are). Raises
    FaultSpecError for a malformed spec: check it where a process starts."""
    return f"fault injection armed: {ENV}={os.environ[ENV]}" if armed() else ""


def check(point: str, error: type[Exception]) -> None:
    """Raise ``error`` (RuntimeError for ``POINT:bug``) when ``NETPLUG_FAULTS`` names ``point``."""
    if not os.environ.get(ENV):
        return
    for fault in armed():
        if fault.point == point and (fault.times is None or _count(point, fault.times)):
            raise (RuntimeError if fault.bug else error)(f"injected failure in {point}")


def _count(point: str, times: int) -> bool:
    """Whether a ``POINT*times`` point fails this time (its first ``times`` visits)."""
    with _lock:
        _reached[point] = _reached.get(point, 0) + 1
        return _reached[point] <= times


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
