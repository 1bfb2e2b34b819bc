"""What hosts report of the policies they enforce: packet counters and revision.

Pure. Each agent reads its table's named counters (``nft -j list counters
table inet netplug``, decoded: ``from_listing``) and records them in the store
with the policy revision it enforces (``ipam.schema.Enforcement``); a reader
sums the live hosts' counters (``total``) and lists the hosts whose revision
is not the store's (``behind``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from netplug.policy.plan import ISOLATION_DROPPED, counter_names


@dataclass(frozen=True, slots=True)
class Counts:
    """Packets a policy let through (an allow rule matched) and dropped."""

    allowed: int = 0
    dropped: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.allowed + other.allowed, self.dropped + other.dropped)


@dataclass(frozen=True, slots=True)
class HostCounters:
    """One table's counters (or several tables' summed): by policy, and the
    packets isolation dropped between networks."""

    policies: Mapping[str, Counts] = field(default_factory=dict)
    isolation_dropped: int = 0


def from_listing(listing: Mapping) -> HostCounters:
    """The counters in nft's JSON listing; counters that are not netplug's
    (no ``pol/NAME/allowed|dropped`` or ``isolation/dropped`` name) are ignored."""
    packets = {
        item["counter"]["name"]: int(item["counter"].get("packets", 0))
        for item in listing.get("nftables", [])
        if isinstance(item, Mapping) and "counter" in item
    }
    policies: dict[str, Counts] = {}
    for name in packets:
        policy = _policy_of(name)
        if policy is not None and policy not in policies:
            allowed, dropped = counter_names(policy)
            policies[policy] = Counts(packets.get(allowed, 0), packets.get(dropped, 0))
    return HostCounters(dict(sorted(policies.items())), packets.get(ISOLATION_DROPPED, 0))


def _policy_of(counter: str) -> str | None:
    """The policy a counter name belongs to (``counter_names``' inverse), or None."""
    for suffix in ("/allowed", "/dropped"):
        name = counter.removeprefix("pol/").removesuffix(suffix)
        if name and counter in counter_names(name):
            return name
    return None


def total(hosts: Iterable[HostCounters]) -> HostCounters:
    """Every host's counters summed, policy by policy."""
    policies: dict[str, Counts] = {}
    isolation = 0
    for host in hosts:
        for name, counts in host.policies.items():
            policies[name] = policies.get(name, Counts()) + counts
        isolation += host.isolation_dropped
    return HostCounters(dict(sorted(policies.items())), isolation)


def behind(enforced: Mapping[str, int | None], live: Iterable[str], current: int) -> list[str]:
    """The live hosts that do not enforce policy revision ``current``, by name:
    those reporting another revision, none yet (None), or no report at all."""
    return sorted(host for host in live if enforced.get(host) != current)
