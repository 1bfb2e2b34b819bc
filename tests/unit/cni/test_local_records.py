"""The host's own copy of its attachment records and address links (no root needed)."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface, ip_network

from netplug.cni import local_records
from netplug.ipam.allocations import Allocation, Attachment


def attachment(container: str) -> Attachment:
    allocation = Allocation(
        ip_interface("10.244.7.9/24"), ip_address("10.244.7.1"), ip_network("10.244.7.0/24")
    )
    return Attachment("blue", "node-1", container, "eth0", (allocation,))


def test_a_record_and_its_address_link_come_and_go_together(tmp_path) -> None:
    run = str(tmp_path)
    local_records.write(run, "node-1", attachment("c1"), "np0000000000001")
    assert local_records.read_all(run, "node-1") == {"np0000000000001": attachment("c1")}
    assert local_records.holder(run, "node-1", "blue", "10.244.7.9") == "np0000000000001"
    local_records.remove(run, "node-1", "blue", "np0000000000001")
    local_records.remove(run, "node-1", "blue", "np0000000000001")  # idempotent
    assert local_records.read_all(run, "node-1") == {}
    assert local_records.holder(run, "node-1", "blue", "10.244.7.9") is None


def test_removing_an_old_attachment_keeps_the_link_of_the_one_that_took_its_address(
    tmp_path,
) -> None:
    run = str(tmp_path)
    local_records.write(run, "node-1", attachment("c1"), "np0000000000001")
    local_records.write(run, "node-1", attachment("c2"), "np0000000000002")
    local_records.remove(run, "node-1", "blue", "np0000000000001")
    assert local_records.holder(run, "node-1", "blue", "10.244.7.9") == "np0000000000002"


def test_the_policy_copy_is_written_when_it_changes_only(tmp_path) -> None:
    run = str(tmp_path)
    assert local_records.read_policies(run, "node-1") is None  # none kept yet
    documents = [{"name": "a", "network": "blue", "select": {}}]
    local_records.write_policies(run, "node-1", documents)
    copy = tmp_path / "node-1" / local_records.POLICIES
    written = copy.stat().st_ino
    local_records.write_policies(run, "node-1", documents)  # unchanged: not rewritten
    assert copy.stat().st_ino == written
    assert local_records.read_policies(run, "node-1") == documents
    local_records.write_policies(run, "node-1", [])
    assert local_records.read_policies(run, "node-1") == []


def test_a_policy_copy_that_does_not_read_is_none(tmp_path) -> None:
    (tmp_path / "node-1").mkdir()
    copy = tmp_path / "node-1" / local_records.POLICIES
    for junk in (b"not json", b'{"a": 1}'):
        copy.write_bytes(junk)
        assert local_records.read_policies(str(tmp_path), "node-1") is None
