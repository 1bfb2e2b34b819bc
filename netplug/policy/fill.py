"""A plan's sets filled with containers, kept from one batch of changes to the next.

``Plan.filled`` unions every container's share (``Plan.elements``) anew: at
1000 containers that pass, with the enforcer's others over every container,
was most of an agent's CPU per store event, for one container that came or
went. ``Fill`` keeps each container's share and how many containers hold each
element, so that a change costs the containers it names (a selector match
each) and a copy of the sets they touched. Pure: endpoints in, a ``Dataplane``
out, as ``Plan.filled``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace

from netplug.policy.plan import Dataplane, Endpoint, Plan, Share

Shares = dict[str, tuple[Endpoint, Share]]  # by attachment key: the endpoint and its share


class Fill:
    """``plan`` filled with the endpoints given to ``update``, as host ``me`` sees them."""

    def __init__(self, plan: Plan, me: str) -> None:
        self.plan, self.me = plan, me
        self.shares: Shares = {}
        self._holders: dict[str, Counter[str]] = {name: Counter() for name in plan.base.members}
        self._members = dict(plan.base.members)  # as of the last ``dataplane``
        self._touched: set[str] = set()  # sets whose holders changed since

    def update(
        self, endpoints: Mapping[str, Endpoint], keys: Iterable[str]
    ) -> tuple[Shares, Shares]:
        """Bring the shares of ``keys`` to ``endpoints`` (a key absent there: its
        container went). Returns the (before, after) shares of the keys whose
        share changed, for ``departures.departed_shares``; a container equal to
        the one it had keeps its share (its very tuple)."""
        before: Shares = {}
        after: Shares = {}
        for key in keys:
            endpoint, kept = endpoints.get(key), self.shares.get(key)
            if kept is not None and _same(kept[0], endpoint):
                continue
            if kept is not None:
                before[key] = kept
            if endpoint is None:
                self._put(key, None)
            else:
                after[key] = (endpoint, self.plan.elements(endpoint, self.me))
                self._put(key, after[key])
        return before, after

    def put(self, key: str, endpoint: Endpoint, share: Share) -> None:
        """``endpoint`` at ``key``, its share already matched (``Plan.elements``)."""
        self._put(key, (endpoint, share))

    def dataplane(self) -> Dataplane:
        """The plan's table holding every share (``Plan.filled`` of them)."""
        base = self.plan.base.members
        for name in self._touched:
            self._members[name] = base[name].union(self._holders[name])
        self._touched.clear()
        return replace(self.plan.base, members=dict(self._members))

    def _put(self, key: str, share: tuple[Endpoint, Share] | None) -> None:
        kept = self.shares.pop(key, None)
        if kept is not None:
            self._count(kept[1], -1)
        if share is not None:
            self.shares[key] = share
            self._count(share[1], 1)

    def _count(self, share: Share, step: int) -> None:
        for name, items in share.items():
            holders = self._holders[name]
            for item in items:
                holders[item] += step
                if not holders[item]:
                    del holders[item]
            self._touched.add(name)


def _same(kept: Endpoint, endpoint: Endpoint | None) -> bool:
    return endpoint is not None and (kept is endpoint or kept == endpoint)
