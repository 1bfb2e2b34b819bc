"""A DEL (or GC) that fails part-way, and the runtime's retry of it.

The bridge's neighbour entries for a container are found through the host's
copy of its record (``local_records``): a DEL that could not delete them keeps
the record, answers the error, and its retry deletes them; a GC keeps the
attachment in the store, where its retry finds it again. Meanwhile another
container may have been given one of the addresses (a full host reuses one at
once): the retry must touch only what the first container still holds, neither
the newcomer's neighbour entry nor its conntrack entries. The neighbour
deletion fails once through the ``forget_container`` fault point
(``netplug.faults``), on the agent (armed when it starts) or in the plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from probes import TCP, UDP, V4, V6, conntrack_entries

from netplug.cni import local_records
from netplug.faults import ENV
from netplug.ipam.schema import Attachments
from netplug.net import veth

from netplug_env import NetplugHost, eventually

pytestmark = pytest.mark.netns

SUBNET6 = "fd00:244::/48"
# The first deletion of a container's neighbour entries fails: the agent's (it
# counts, armed at its start), or the plugin's on the DEL that passes FAILING.
FAILING = {ENV: "forget_container*1"}
PEER4, PEER6 = "192.0.2.7", "2001:db8::7"  # the far end of the conntrack entries made here


@pytest.fixture(params=["agent", "in-process"])
def host(request: pytest.FixtureRequest, plain_host: NetplugHost) -> Iterator[NetplugHost]:
    """``plain_host`` with its agent (whose first neighbour deletion fails), or without."""
    if request.param == "in-process":
        yield plain_host
        return
    launcher = ["ip", "netns", "exec", plain_host.netns, "env", f"{ENV}={FAILING[ENV]}"]
    with plain_host.agent(launcher):
        yield plain_host


def attach(host: NetplugHost, conf: dict, cid: str, netns: str, ip: str = "") -> list[str]:
    """ADD ``cid`` (at the IPv4 address ``ip`` if given); its addresses, IPv4 first."""
    env = {"CNI_ARGS": f"IgnoreUnknown=1;IP={ip}"} if ip else None
    result = host.add(conf, cid, netns, env=env)
    return [i["address"].split("/")[0] for i in result["ips"]]


def fail(host: NetplugHost, command: str, conf: dict, **call: str | None) -> None:
    """``command`` with its neighbour deletion failing: it answers the error."""
    failed = host.call(command, conf, env=FAILING, **call)
    assert failed.status == 1 and failed.out is not None, failed
    assert "injected failure in forget_container" in failed.out["msg"], failed.out


def record(host: NetplugHost, conf: dict, cid: str) -> Path:
    """Where the host keeps its copy of ``cid``'s record (on eth0)."""
    host_end = veth.host_veth_name(cid, "eth0")
    return Path(local_records.path(str(host.run_dir), host.host_name, conf["name"], host_end))


def permanent(host: NetplugHost, address: str) -> list[tuple[str, list[str]]]:
    """(MAC, state) of the host's neighbour entries for ``address``."""
    return [(e["lladdr"], e["state"]) for e in host.neighbours(address)]


def busy_network(host: NetplugHost, containers: Callable[[], str]) -> tuple[dict, str]:
    """A dual-stack network with a container keeping the bridge's carrier up (an
    emptied bridge loses it, and the kernel flushes its neighbours); a fresh
    namespace for ``a``."""
    conf = host.conf(subnet6=SUBNET6)
    attach(host, conf, "neighbour", containers())
    return conf, containers()


def test_a_del_that_cannot_delete_the_bridge_entries_keeps_the_record_for_its_retry(
    host: NetplugHost, containers: Callable[[], str]
) -> None:
    """Guards 9b55967 (DEL keeps the record when the neighbour entries could not
    be deleted). Checked to fail with ``_detach`` removing the record whatever
    ``_forget_container`` did: the record was gone, and the retry, finding no
    record, left the permanent entries for good."""
    conf, ctr = busy_network(host, containers)
    addresses = attach(host, conf, "a", ctr)
    before = [permanent(host, a) for a in addresses]
    assert all(len(entries) == 1 for entries in before), before

    fail(host, "DEL", conf, container_id="a", netns=ctr)
    assert record(host, conf, "a").exists(), "the record went with the entries still there"
    assert [permanent(host, a) for a in addresses] == before

    host.delete(conf, "a", ctr)  # the runtime's retry
    assert [permanent(host, a) for a in addresses] == [[], []]
    assert not record(host, conf, "a").exists()


def test_a_retried_del_spares_the_container_that_took_its_address(
    host: NetplugHost, containers: Callable[[], str]
) -> None:
    """Guards 9b55967 (DEL deletes the conntrack entries of the addresses the
    container still holds, ``local_records.held``). ``a``'s DEL fails and keeps
    its record; ``b`` is given ``a``'s IPv4 address; ``a``'s DEL is retried. It
    deletes the entries of ``a``'s IPv6 address (which it still holds: through
    the agent, in a round after the answer that takes IPv4 first), and none of
    ``b``'s. Checked to fail with ``_forget_connections`` taking every address of
    the record (``local_records.read``), as before: ``b``'s entries were gone."""
    conf, ctr = busy_network(host, containers)
    a4, a6 = attach(host, conf, "a", ctr)
    fail(host, "DEL", conf, container_id="a", netns=ctr)
    b4, b6 = attach(host, conf, "b", containers(), ip=a4)
    assert b4 == a4 and b6 != a6, (b4, b6)
    b_mac = [permanent(host, b4)[0][0]]
    b_entries = [(V4, b4, PEER4, UDP, PEER4, b4), (V4, PEER4, b4, TCP, b4, PEER4)]
    conntrack_entries(host.netns, [*b_entries, (V6, a6, PEER6, UDP, PEER6, a6)])

    host.delete(conf, "a", ctr)  # the runtime's retry

    def of_a_or_b() -> list[list[str]]:
        return [e for e in conntrack_entries(host.netns) if {a4, a6} & set(e)]

    assert eventually(lambda: not any(a6 in e for e in of_a_or_b())), "a's entries stayed"
    assert of_a_or_b() == sorted([e[1], e[2], e[4], e[5]] for e in b_entries)
    assert [mac for mac, _ in permanent(host, b4)] == b_mac
    assert not record(host, conf, "a").exists()
    assert local_records.holder(str(host.run_dir), host.host_name, conf["name"], b4) == (
        veth.host_veth_name("b", "eth0")
    )


def test_a_gc_that_cannot_delete_the_bridge_entries_releases_nothing_until_its_retry(
    host: NetplugHost, containers: Callable[[], str]
) -> None:
    """GC, which 9b55967 also made keep the record when the entries could not be
    deleted, finds what to collect in the store, not in the records: it released
    the attachment all the same, and its retry never found the entries again
    (found by this test: before the fix beside it, the retried GC left both
    permanent entries and the record for good)."""
    conf = host.conf("1.1.0", subnet6=SUBNET6)
    attach(host, conf, "keep", containers())  # valid; keeps the bridge's carrier up
    addresses = attach(host, conf, "drop", containers())
    valid = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    key = Attachments.key(conf["name"], host.host_name, "drop", "eth0")

    fail(host, "GC", valid, ifname=None)
    assert key in host.records(key), "released: no retry can find the entries now"
    assert [len(permanent(host, a)) for a in addresses] == [1, 1]
    assert record(host, conf, "drop").exists()

    assert host.call("GC", valid, ifname=None).status == 0  # the runtime's next GC
    assert [permanent(host, a) for a in addresses] == [[], []]
    assert not record(host, conf, "drop").exists()
    assert host.records(key) == {}
