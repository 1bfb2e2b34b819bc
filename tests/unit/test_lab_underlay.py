"""The lab fabric's permanent neighbour entries (netns-lab ``underlay``)."""

from __future__ import annotations

from netplug.lab.underlay import Port, entries, mac


def test_a_fabric_mac_is_local_and_made_of_the_address():
    assert mac("192.0.2.1") == "02:00:c0:00:02:01"
    assert mac("192.0.2.50") == "02:00:c0:00:02:32"
    assert int(mac("192.0.2.11").split(":")[0], 16) & 0b11 == 0b10  # local, unicast


def test_a_joining_port_and_every_other_learn_each_other():
    fabric = Port("lab-fabric", "fabric0", "192.0.2.1")
    host1 = Port("lab-host1", "under0", "192.0.2.11")
    host2 = Port("lab-host2", "under0", "192.0.2.12")

    got = entries(host2, [fabric, host1, host2])  # the new port is on the record too

    assert len(got) == 4
    assert set(got) == {
        (host2, "192.0.2.1", "02:00:c0:00:02:01"),
        (host2, "192.0.2.11", "02:00:c0:00:02:0b"),
        (fabric, "192.0.2.12", "02:00:c0:00:02:0c"),
        (host1, "192.0.2.12", "02:00:c0:00:02:0c"),
    }


def test_the_first_port_has_only_the_fabric_to_learn():
    fabric = Port("lab-fabric", "fabric0", "192.0.2.1")
    host1 = Port("lab-host1", "under0", "192.0.2.11")
    assert entries(host1, [fabric, host1]) == [
        (host1, "192.0.2.1", "02:00:c0:00:02:01"),
        (fabric, "192.0.2.11", "02:00:c0:00:02:0b"),
    ]
