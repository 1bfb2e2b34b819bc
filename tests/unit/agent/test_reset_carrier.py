"""The store view's carry over a store reset and its copy on the host: saved at
once when it begins, then at most every SAVE_INTERVAL while it shrinks; a file
that cannot be written or removed is logged, never raised into the view."""

from __future__ import annotations

import pytest

from netplug.agent import reset_carrier
from netplug.agent.carry_file import CarryFile
from netplug.agent.reset_carrier import ResetCarrier
from netplug.ipam.identity import HostMemory
from netplug.ipam.schema import Hosts, Vteps
from netplug.ipam.store.base import Event, KeyValue

H2, VTEP2, VTEP3 = Hosts.key("h2"), Vteps.key("blue", "h2"), Vteps.key("blue", "h3")


def kv(key: str) -> KeyValue:
    return KeyValue(key, b"{}", 7, 7, 1)


BEFORE = {key: kv(key) for key in (H2, VTEP2, VTEP3)}


@pytest.fixture
def carry_file(tmp_path) -> CarryFile:
    return CarryFile(HostMemory(str(tmp_path), "h1", "sqlite:///x.db"))


def test_the_copy_is_saved_at_once_then_at_most_every_save_interval(carry_file) -> None:
    carrier = ResetCarrier("h1", 600.0, carry_file)
    carrier.begin(BEFORE, {})
    carrier.save()
    assert set(carry_file.load().records) == {H2, VTEP2, VTEP3}
    carrier.settle([Event("put", kv(H2))], 9)  # h2 registered: its records go
    carrier.save()  # not due yet: a large carry is megabytes
    assert set(carry_file.load().records) == {H2, VTEP2, VTEP3}
    carrier._saved_at -= reset_carrier.SAVE_INTERVAL  # as if that long ago
    carrier.save()
    assert set(carry_file.load().records) == {VTEP3}
    assert carrier.report()["carried"] == {"h3": 1}


def test_a_carry_file_that_cannot_be_written_or_removed_is_logged(carry_file, caplog) -> None:
    carry_file.path.mkdir(parents=True)  # a directory where the file goes
    carrier = ResetCarrier("h1", 600.0, carry_file)
    carrier.resume_saved({})  # unreadable: logged, and not removable: logged
    carrier.begin(BEFORE, {})
    carrier.save()
    assert carrier.report()["carried"] == {"h2": 2, "h3": 1}  # carried in memory
    assert "ignoring the unreadable carry of a store reset" in caplog.text
    assert "cannot remove the carry of a store reset" in caplog.text
    assert "cannot keep the records carried over the store reset" in caplog.text
