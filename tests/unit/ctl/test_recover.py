"""netplugctl recover's core on both backends: what it writes back, what it leaves,
when the host adopts the store's identity (the veths are given, no netlink)."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface, ip_network

import pytest

from netplug.cni import local_records
from netplug.ctl import recover
from netplug.ipam import identity, networks, policies
from netplug.ipam.allocations import IPAM, Allocation, Attachment, Pool
from netplug.ipam.schema import Attachments, Blocks, Vteps
from netplug.policy.model import parse_document

NETWORK = {
    "subnet": "10.244.0.0/16",
    "subnet6": "",
    "vni": 4242,
    "domain": "netplug.internal",
    "block_prefix": 24,
    "block_prefix6": 0,
}
VTEP = {"vtep": "192.0.2.11", "mac": "02:00:00:00:00:01", "vni": 4242}


def attachment(container: str, address: str) -> Attachment:
    allocation = Allocation(
        ip_interface(f"{address}/24"), ip_address("10.244.7.1"), ip_network("10.244.7.0/24")
    )
    return Attachment("blue", "node-1", container, "eth0", (allocation,), ("web",), "/run/netns/x")


@pytest.fixture
def run_dir(tmp_path) -> str:
    path = str(tmp_path / "run")
    local_records.write(path, "node-1", attachment("c1", "10.244.7.9"), "np0000000000001")
    return path


def test_recover_writes_back_what_is_missing_and_adopts_the_store(store, run_dir) -> None:
    rows = recover.recover(store, "node-1", run_dir, ["np0000000000001", "np00000000000ff"])
    assert [(r.container, r.state) for r in rows] == [
        ("c1", recover.RESTORED),
        ("-", "no record: not restored; delete the veth or its container"),
    ]
    ipam = IPAM(store, "node-1")
    assert ipam.lookup("blue", "c1", "eth0") == attachment("c1", "10.244.7.9")
    assert ipam.host_blocks("blue", Pool(ip_network("10.244.0.0/16"), 24)) == [
        ip_network("10.244.7.0/24")
    ]
    memory = identity.HostMemory(run_dir, "node-1", store.url)
    assert memory.read() == identity.store_id(store) is not None
    # The IPAM hands the restored address to nobody else.
    other = ipam.allocate("blue", [Pool(ip_network("10.244.0.0/16"), 24)], "c2", "eth0")
    assert other.allocations[0].address != ip_interface("10.244.7.9/24")

    revision = store.status()
    again = recover.recover(store, "node-1", run_dir, ["np0000000000001"])
    assert [r.state for r in again] == [recover.PRESENT]
    assert store.status() == revision


def test_a_block_another_host_holds_is_a_conflict_and_nothing_is_adopted(store, run_dir) -> None:
    store.put(Blocks.key("blue", ip_network("10.244.7.0/24")), Blocks.encode("node-2"))
    rows = recover.recover(store, "node-1", run_dir, ["np0000000000001"])
    assert rows[0].conflict and "held by host node-2" in rows[0].state
    assert store.get(Attachments.key("blue", "node-1", "c1", "eth0")) is None
    assert identity.HostMemory(run_dir, "node-1", store.url).read() is None


def test_an_unreadable_record_in_the_way_is_a_conflict_not_a_crash(store, run_dir) -> None:
    store.put(Blocks.key("blue", ip_network("10.244.7.0/24")), b"not json")
    [row] = recover.recover(store, "node-1", run_dir, ["np0000000000001"])
    assert row.conflict and "cannot be read (block record: expected JSON" in row.state
    assert store.get(Attachments.key("blue", "node-1", "c1", "eth0")) is None


def test_an_address_another_container_holds_is_a_conflict(store, run_dir) -> None:
    IPAM(store, "node-1").allocate(
        "blue", [Pool(ip_network("10.244.0.0/16"), 24)], "c9", "eth0", [ip_address("10.244.7.9")]
    )
    [row] = recover.recover(store, "node-1", run_dir, ["np0000000000001"])
    assert row.conflict and "held by container c9/eth0" in row.state


def test_the_kept_network_and_vtep_records_come_back_first(store, run_dir) -> None:
    local_records.write_network(run_dir, "node-1", "blue", {"network": NETWORK, "vtep": VTEP})
    rows = recover.recover(store, "node-1", run_dir, [])
    assert [(r.network, r.addresses, r.state) for r in rows] == [
        ("blue", "10.244.0.0/16", recover.RESTORED)
    ]
    assert networks.networks(store)["blue"] == networks.NetworkRecord(**NETWORK)
    assert Vteps.decode(store.get(Vteps.key("blue", "node-1")).value)._asdict() == VTEP
    assert [r.state for r in recover.recover(store, "node-1", run_dir, [])] == [recover.PRESENT]


def test_a_network_recorded_otherwise_meanwhile_is_a_conflict(store, run_dir) -> None:
    local_records.write_network(run_dir, "node-1", "blue", {"network": NETWORK, "vtep": None})
    other = networks.NetworkRecord(**{**NETWORK, "subnet": "10.99.0.0/16"})
    networks.ensure_network(store, "blue", other)
    [row] = recover.recover(store, "node-1", run_dir, [])
    assert row.conflict and "10.99.0.0/16" in row.state
    assert identity.HostMemory(run_dir, "node-1", store.url).read() is None


POLICY = {"name": "quarantine", "network": "blue", "select": {"names": ["suspect"]}}


def test_the_kept_policies_come_back_beside_the_hosts_records(store, run_dir) -> None:
    """Policies belong to no host: without the hosts' copies a reset store loses
    them, and a container a policy confined talks to everyone again."""
    local_records.write_policies(run_dir, "node-1", [{**POLICY, "ingress": [], "egress": []}])
    rows = recover.recover(store, "node-1", run_dir, ["np0000000000001"])
    assert [(r.policy, r.network, r.state) for r in rows] == [
        ("quarantine", "blue", recover.RESTORED),
        ("-", "blue", recover.RESTORED),
    ]
    (restored,) = policies.read(store)
    assert (restored.name, restored.ingress, restored.egress) == ("quarantine", (), ())
    assert identity.HostMemory(run_dir, "node-1", store.url).read() is not None
    again = recover.recover(store, "node-1", run_dir, ["np0000000000001"])
    assert [r.state for r in again] == [recover.PRESENT, recover.PRESENT]


def test_a_policy_copy_that_does_not_parse_is_reported_and_adopts_anyway(store, run_dir):
    local_records.write_policies(run_dir, "node-1", [{"name": "bad"}])
    [row, _] = recover.recover(store, "node-1", run_dir, ["np0000000000001"])
    assert row.state.startswith("no record: the policy copy does not read") and not row.conflict
    assert policies.read(store) == []
    assert identity.HostMemory(run_dir, "node-1", store.url).read() is not None


def test_policies_the_store_has_set_otherwise_are_kept_aside_not_restored(store, run_dir):
    """A policy applied after the reset: someone set the store's policies again, so
    the copy's are not written back (a deleted one must not return); they are kept
    in a file of their own, since the copy follows the store once the agent does."""
    policies.apply(store, parse_document([{**POLICY, "name": "new"}], None))
    local_records.write_policies(run_dir, "node-1", [{**POLICY, "ingress": []}])
    [row, _] = recover.recover(store, "node-1", run_dir, ["np0000000000001"])
    aside = f"{run_dir}/node-1/{local_records.NOT_RESTORED}"
    assert row.state == f"{policies.LEFT_OUT}; apply it from {aside}" and not row.conflict
    assert [p.name for p in policies.read(store)] == ["new"]
    assert local_records.read_policies(run_dir, "node-1", local_records.NOT_RESTORED) == [
        {**POLICY, "ingress": []}
    ]
    assert identity.HostMemory(run_dir, "node-1", store.url).read() is not None
