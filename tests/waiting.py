"""Waiting on a condition with a deadline, for tests that must not sleep-then-assert."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL = 0.01


def wait_for(predicate: Callable[[], object], timeout: float = 5.0, poll: float = POLL) -> bool:
    """Whether ``predicate()`` came true within ``timeout`` seconds (polled every ``poll``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True
