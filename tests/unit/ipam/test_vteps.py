"""Publishing a host's VTEP record, on both backends."""

from __future__ import annotations

from netplug.ipam import vteps
from netplug.ipam.schema import VtepRecord, Vteps

MAC = "02:00:00:00:00:01"


def test_publish_writes_only_a_change(store) -> None:
    assert vteps.publish(store, "blue", "h1", "192.0.2.1", MAC, 4242)
    revision = store.status()
    assert not vteps.publish(store, "blue", "h1", "192.0.2.1", MAC, 4242)
    assert store.status() == revision
    assert vteps.publish(store, "blue", "h1", "192.0.2.9", MAC, 4242)
    record = Vteps.decode(store.get(Vteps.key("blue", "h1")).value)
    assert record == VtepRecord("192.0.2.9", MAC, 4242)


def test_an_unreadable_record_is_replaced(store) -> None:
    """It used to fail every ADD of the host with a JSONDecodeError."""
    store.put(Vteps.key("blue", "h1"), b"not json")
    assert vteps.publish(store, "blue", "h1", "192.0.2.1", MAC, 4242)
    assert store.get(Vteps.key("blue", "h1")).value == (
        b'{"mac":"02:00:00:00:00:01","vni":4242,"vtep":"192.0.2.1"}'
    )
