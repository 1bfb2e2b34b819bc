"""The containers the enforcer programs: the feed's, with ADD's and DEL's on top.

ADD covers its container before the feed brings its record, and DEL uncovers
one the feed still holds; ``Containers`` keeps those beside the feed's parsed
records (``segmentation.Inputs``) and the view they make together
(``endpoints``: the feed's, less those DEL uncovered, plus those ADD
covered). The view is brought up to date by ``refresh`` from the keys touched
since (an incremental feed's ``changed``, each ADD's and DEL's key), so that a
store event about one container costs that container, not a pass over every
container of the cluster: at 40 hosts such passes were most of each agent's
CPU per event. A feed read whole (a ``Full``) makes it compare the whole view.
Not thread-safe: the enforcer calls it under its lock.
"""

from __future__ import annotations

from collections.abc import Iterable

from netplug.cni.segmentation import Inputs
from netplug.policy.plan import Endpoint, NetworkInfo


class Containers:
    def __init__(self, me: str) -> None:
        self.me = me
        self.fed: Inputs | None = None  # the feed's records, parsed (None: not fed yet)
        self.added: dict[str, Endpoint] = {}  # covered by ADD, not yet in the feed
        self.added_networks: dict[str, NetworkInfo] = {}
        self.deleted: set[str] = set()  # uncovered by DEL, still in the feed
        self.endpoints: dict[str, Endpoint] = {}  # the view, as of ``refresh``
        self.local: dict[str, Endpoint] = {}  # the view's containers of host ``me``
        self.version = 0  # bumped by each ``refresh`` that changed the view
        self._dirty: set[str] | None = None  # keys the view may be stale at; None: any

    @property
    def fresh(self) -> bool:
        """Whether the view is up to date (nothing touched since ``refresh``)."""
        return self._dirty is not None and not self._dirty

    def take(self, fed: Inputs) -> None:
        """The feed's records now: what ADD covered is in them from now on, what
        DEL uncovered and they no longer hold is settled."""
        landed = [key for key in self.added if key in fed.endpoints]
        for key in landed:
            del self.added[key]
        self.added_networks = {
            n: info for n, info in self.added_networks.items() if n not in fed.networks
        }
        settled = {key for key in self.deleted if key not in fed.endpoints}
        self.deleted -= settled
        self._touch([*landed, *settled])
        if self.fed is not None and fed.since == self.fed.serial:
            self._touch(fed.changed)  # the feed's next batch: just what it changed
        elif fed is not self.fed:
            self._dirty = None
        self.fed = fed

    def cover(self, key: str, endpoint: Endpoint) -> None:
        self.deleted.discard(key)
        self.added[key] = endpoint
        self._touch((key,))

    def uncover(self, key: str) -> None:
        self.added.pop(key, None)
        if self.fed is not None and key in self.fed.endpoints:
            self.deleted.add(key)
        self._touch((key,))

    def holds(self, key: str) -> bool:
        fed = self.fed is not None and key in self.fed.endpoints and key not in self.deleted
        return fed or key in self.added

    def networks(self) -> dict[str, NetworkInfo]:
        fed = self.fed.networks if self.fed is not None else {}
        return {**fed, **self.added_networks}

    def refresh(self) -> set[str] | None:
        """Bring ``endpoints`` and ``local`` up to date; the keys whose container
        changed (None: the view was compared whole, and any may have)."""
        dirty, self._dirty = self._dirty, set()
        if dirty is None:
            return self._rebuild()
        changed = {key for key in dirty if not _same(self._endpoint(key), self.endpoints.get(key))}
        for key in changed:
            self._set(key, self._endpoint(key))
        if changed:
            self.version += 1
        return changed

    def _rebuild(self) -> set[str] | None:
        fed = self.fed.endpoints if self.fed is not None else {}
        mine = {k: e for k, e in fed.items() if k not in self.deleted} if self.deleted else fed
        view = {**mine, **self.added}
        if view == self.endpoints:
            return set()
        self.endpoints, self.version = view, self.version + 1
        self.local = {k: e for k, e in view.items() if e.host == self.me}
        return None

    def _endpoint(self, key: str) -> Endpoint | None:
        """What the view should hold at ``key``: ADD's, else the feed's unless DEL's."""
        if key in self.added:
            return self.added[key]
        if key in self.deleted or self.fed is None:
            return None
        return self.fed.endpoints.get(key)

    def _set(self, key: str, endpoint: Endpoint | None) -> None:
        if endpoint is None:
            self.endpoints.pop(key, None)
        else:
            self.endpoints[key] = endpoint
        if endpoint is not None and endpoint.host == self.me:
            self.local[key] = endpoint
        else:
            self.local.pop(key, None)

    def _touch(self, keys: Iterable[str]) -> None:
        if self._dirty is not None:
            self._dirty.update(keys)


def _same(a: Endpoint | None, b: Endpoint | None) -> bool:
    return a is b or (a is not None and b is not None and a == b)
