"""How the enforcer is doing, as it reports it: the policy revision in force, and
whether ``nft`` keeps refusing (with the backoff between its attempts).

``Enforcement`` is a plain value over the times it is given (no clock, no
thread), as ``supervisor.LoopHealth``; ``Progress`` follows the policy
revision of a feed's updates and when its newest change arrived, so the
enforcer can tell how long a change took to be in force.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from netplug.agent.store_view import Full, Update
from netplug.ipam import policies

RETRY_INITIAL = 0.5  # seconds before the first retry of a refused batch
RETRY_MAX = 10.0  # the bound the doubling stops at: a log line per 10 s while it fails


@dataclass(frozen=True, slots=True)
class Enforcement:
    revision: int | None = None  # the policy revision in force; None: nothing programmed yet
    failures: int = 0  # attempts refused in a row
    error: str = ""  # the last refusal, while failing
    failing_since: float | None = None  # monotonic seconds

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def enforced(self, revision: int) -> Enforcement:
        return Enforcement(revision)

    def failed(self, now: float, error: str) -> Enforcement:
        since = self.failing_since if self.failing_since is not None else now
        return replace(self, failures=self.failures + 1, error=error, failing_since=since)

    def retry_delay(self) -> float:
        """The pause before the next attempt: doubling from RETRY_INITIAL to RETRY_MAX."""
        return min(RETRY_MAX, RETRY_INITIAL * 2 ** max(0, self.failures - 1))

    def report(self, now: float) -> dict:
        """What /healthz and ``netplugctl status`` show."""
        report: dict = {"state": "failing" if self.failing else "ok", "revision": self.revision}
        if self.failing and self.failing_since is not None:
            report |= {
                "error": self.error,
                "failures": self.failures,
                "failingFor": round(now - self.failing_since, 1),
            }
        return report


class Progress:
    """The policy revision of the records fed so far, and when the oldest policy
    change not yet in force reached the agent (the store view's ``received``;
    one owner: the enforcer's feed loop)."""

    def __init__(self) -> None:
        self.revision = 0
        self.seen: float | None = None

    def take(self, updates: Iterable[Update]) -> None:
        for update in updates:
            if isinstance(update, Full):  # a (re)start: not a change to time
                self.revision = policies.revision(update.kvs)
                continue
            changed = [e.kv.mod_revision for e in update.events if _policy(e.kv.key)]
            if changed:
                self.revision = max(self.revision, *changed)
                self.seen = update.received if self.seen is None else self.seen

    def enforced(self, now: float) -> float | None:
        """Seconds the changes now in force took since they arrived (None: none did)."""
        took = None if self.seen is None else now - self.seen
        self.seen = None
        return took


def _policy(key: str) -> bool:
    return key.startswith(policies.REVISION_KEYS)
