"""The host a CNI call runs on: its identity in the store and the store itself.

The agent builds one when it starts and keeps it warm; the in-process
fallback builds one per call. Commands receive it, never a global.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from netplug.ipam import identity
from netplug.ipam.allocations import IPAM
from netplug.ipam.store.base import Store
from netplug.ipam.store.url import open_store
from netplug.net.seen import Seen
from netplug.policy.plan import Endpoint, NetworkInfo

if TYPE_CHECKING:  # netplug-ipam imports this module and never needs netlink
    from netplug.net.conntrack import Deleter

T = TypeVar("T")


class Enforcement(Protocol):
    """What ADD and DEL ask of the agent's enforcer (``netplug.agent.enforcer``):
    a container's set elements programmed before ADD answers, removed at DEL."""

    def cover(self, key: str, endpoint: Endpoint, network: NetworkInfo) -> None: ...

    def uncover(self, key: str) -> None: ...


class Host:
    def __init__(self, name: str, store: Store) -> None:
        self.name = name
        self.store = store
        self.ipam = IPAM(store, name)
        # The agent's enforcer; None in a plugin process, which programs the
        # table itself (``netplug.cni.segmentation.refresh``).
        self.enforcer: Enforcement | None = None
        # The agent's conntrack deleter (DEL does not wait for it; an ADD of an
        # address waits for its deletion); None in a plugin process, which
        # deletes before it answers.
        self.conntrack: Deleter | None = None

        # The shared devices (bridges, their gateways, VXLAN addresses, NAT
        # tables) as this process last made or saw them: a long-lived agent
        # skips redoing that work, and re-checks a fact found wrong.
        self.seen = Seen()
        self._memo: dict[object, tuple[float, object]] = {}

    def remembered(self, key: object, ttl: float, compute: Callable[[], T]) -> T:
        """``compute()``, reused for ``ttl`` seconds under ``key`` (agent-lifetime caches)."""
        now = time.monotonic()
        hit = self._memo.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = compute()
        self._memo[key] = (now + ttl, value)
        return value

    @classmethod
    def open(cls, name: str, store_url: str) -> Host:
        return cls(name, open_store(store_url))

    def serves(self, host_name: str, store_url: str) -> bool:
        """Whether a call for ``host_name`` on ``store_url`` belongs to this host."""
        return host_name == self.name and store_url == self.store.url

    def store_memory(self, run_dir: str) -> identity.HostMemory:
        """Where this host remembers its store's identity (``netplug.ipam.identity``)."""
        return identity.HostMemory(run_dir, self.name, self.store.url)

    def close(self) -> None:
        self.store.close()
