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
