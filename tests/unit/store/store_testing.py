"""Helpers shared by the store tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.context import BaseContext

from netplug.ipam.store.base import Compare, Event, Put, Store


def wait_until(condition: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def collect(events: Iterator[list[Event]], count: int, timeout: float = 3.0) -> list[Event]:
    """The first ``count`` events of a watch (which must yield [] at least every 0.1 s)."""
    got: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} events: {got}"
        got += next(events)
    return got


def summary(events: list[Event], base: int = 0) -> list[tuple[str, str, int]]:
    """(type, key, revision - base) of each event."""
    return [(e.type, e.kv.key, e.kv.mod_revision - base) for e in events]


KEYS = [f"alloc/{i}" for i in range(500)]


def claim_all(store: Store, owner: str, keys: list[str]) -> int:
    """Create-if-absent every key; how many this caller created."""
    return sum(store.txn([Compare.absent(k)], [Put(k, owner.encode())]).succeeded for k in keys)


def results_of_children(
    ctx: BaseContext, target: Callable[..., None], arguments: Sequence[tuple], results
) -> list:
    """Start one process of ``target`` per argument tuple, each putting one value on
    ``results``; those values, after every child is joined (killed if stuck)."""
    procs = [ctx.Process(target=target, args=args) for args in arguments]
    for p in procs:
        p.start()
    try:
        return [results.get(timeout=30) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
