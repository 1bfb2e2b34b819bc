"""netns-lab's etcd members: addresses, names and the store URL (pure)."""

from __future__ import annotations

from netplug.ipam.store.url import parse_store_url
from netplug.lab.lab import FABRIC_ADDRESS, etcd_address, etcd_index, etcd_name, etcd_url


def test_a_lone_member_keeps_the_fabric_address_and_its_old_names() -> None:
    assert etcd_url(1) == f"etcd://{FABRIC_ADDRESS}:2379"
    assert (etcd_address(0, 1), etcd_name(0, 1), etcd_index("etcd")) == (FABRIC_ADDRESS, "lab", 0)


def test_a_cluster_lists_every_member_in_the_url() -> None:
    url = etcd_url(3)
    assert url == "etcd://192.0.2.2:2379,192.0.2.3:2379,192.0.2.4:2379"
    assert parse_store_url(url).endpoints == tuple((f"192.0.2.{i}", 2379) for i in (2, 3, 4))
    assert [etcd_name(i, 3) for i in range(3)] == ["lab1", "lab2", "lab3"]
    assert [etcd_index(what) for what in ("etcd1", "etcd3", "host1/netplugd", "etcdx")] == [
        0,
        2,
        None,
        None,
    ]
