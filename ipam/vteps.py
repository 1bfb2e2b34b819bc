"""Each host's VXLAN endpoint per network, as the plugin found it on ADD."""

from __future__ import annotations

from netplug.ipam.schema import MalformedRecord, VtepRecord, Vteps
from netplug.ipam.store.base import Store


def publish(store: Store, network: str, host: str, vtep: str, mac: str, vni: int) -> bool:
    """Record ``host``'s VTEP for ``network``; writes only on a change (returns whether).
    An unreadable record there is replaced."""
    key = Vteps.key(network, host)
    record = VtepRecord(vtep, mac, vni)
    current = store.get(key)
    if current is not None and _readable(current.value) == record:
        return False
    store.put(key, Vteps.encode(record))
    return True


def _readable(value: bytes) -> VtepRecord | None:
    try:
        return Vteps.decode(value)
    except MalformedRecord:
        return None
