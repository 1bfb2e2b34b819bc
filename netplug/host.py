"""The host a CNI call runs on: its identity in the store and the store itself.

The agent builds one when it starts and keeps it warm; the in-process
fallback builds one per call. Commands receive it, never a global.
"""

from __future__ import annotations

from netplug.ipam.allocations import IPAM
from netplug.ipam.store.base import Store
from netplug.ipam.store.url import open_store
from netplug.net.teardown import Teardown


class Host:
    def __init__(self, name: str, store: Store, teardown: Teardown | None = None) -> None:
        self.name = name
        self.store = store
        self.ipam = IPAM(store, name)
        # How DEL deletes container interfaces: the agent defers it past the reply.
        self.teardown = teardown or Teardown()
        # Networks whose NAT table this process installed, with their subnets.
        self.masq_ensured: dict[str, list] = {}

    @classmethod
    def open(cls, name: str, store_url: str, teardown: Teardown | None = None) -> Host:
        return cls(name, open_store(store_url), teardown)

    def serves(self, host_name: str, store_url: str) -> bool:
        """Whether a call for ``host_name`` on ``store_url`` belongs to this host."""
        return host_name == self.name and store_url == self.store.url

    def close(self) -> None:
        self.teardown.close()
        self.store.close()
