"""Each host's VXLAN endpoint per network, as the plugin found it on ADD."""

from __future__ import annotations

from netplug.ipam import keys
from netplug.ipam.store.base import Store


def publish(store: Store, network: str, host: str, vtep: str, mac: str, vni: int) -> bool:
    """Record ``host``'s VTEP for ``network``; writes only on a change (returns whether)."""
    key = keys.vtep_key(network, host)
    record = {"vtep": vtep, "mac": mac, "vni": vni}
    current = store.get(key)
    if current is not None and keys.decode(current.value) == record:
        return False
    store.put(key, keys.encode(record))
    return True
