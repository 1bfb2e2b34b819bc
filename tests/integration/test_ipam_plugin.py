"""`netplug-ipam` as the IPAM of the reference `bridge` and `macvlan` plugins, through
cbcni (libcni 1.1.2): ADD, CHECK, DEL; addresses come from and go back to netplug's store."""

from __future__ import annotations

import os
from collections.abc import Callable
from ipaddress import ip_interface
from pathlib import Path
from typing import Any

import pytest
from netplug_clients import addresses, attachments, install_plugins, link, plugin_conf

from netplug_env import NetplugHost, ping
from runtimes import Cbcni, run

pytestmark = pytest.mark.netns

SUBNET = "10.245.0.0/16"


@pytest.fixture
def cni_plugin_dirs(tmp_path: Path) -> list[Path]:
    return install_plugins(tmp_path / "cni-bin")


@pytest.fixture
def host(host_netns: str, tmp_path: Path) -> NetplugHost:
    return NetplugHost(host_netns, tmp_path / "host")


def ipam(host: NetplugHost, **fields: Any) -> dict[str, Any]:
    return {
        "type": "netplug-ipam",
        "subnet": SUBNET,
        "store": host.store,
        "hostName": host.host_name,
        "logFile": str(host.log_file),
        "runDir": str(host.run_dir),
        **fields,
    }


def add_two(
    cbcni: Cbcni, network: str, containers: Callable[[], str]
) -> list[tuple[str, str, dict[str, Any]]]:
    """ADD and CHECK two containers; (container id, netns, result) for each."""
    added = []
    for cid in ("c1", "c2"):
        ctr = containers()
        result = cbcni.add(network, ctr, container_id=cid)
        assert result["cniVersion"] == "1.0.0"
        (ip,) = result["ips"]
        assert addresses(ctr) == {ip["address"]}
        cbcni.check(network, ctr, container_id=cid)
        added.append((cid, ctr, result))
    return added


def del_all(cbcni: Cbcni, network: str, added: list[tuple[str, str, dict[str, Any]]]) -> None:
    for cid, ctr, _ in added:
        cbcni.delete(network, ctr, container_id=cid)
        assert link(ctr) is None
        cbcni.delete(network, ctr, container_id=cid)  # idempotent


def test_bridge_with_netplug_ipam(
    cbcni: Cbcni, host: NetplugHost, host_netns: str, containers: Callable[[], str]
) -> None:
    cbcni.write_network(
        {
            "cniVersion": "1.0.0",
            "name": "npt-br",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "nptbr1",
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": ipam(host, routes=[{"dst": "0.0.0.0/0"}]),
                }
            ],
        }
    )
    added = add_two(cbcni, "npt-br", containers)
    (_, a, res_a), (_, b, res_b) = added
    ip_a, ip_b = res_a["ips"][0], res_b["ips"][0]
    assert ip_a["address"] != ip_b["address"]
    assert ip_a["gateway"] == ip_b["gateway"]
    assert ip_interface(ip_a["address"]).network.subnet_of(ip_interface(SUBNET).network)
    # the route without "gw" goes via the block's gateway, which bridge puts on nptbr1
    assert res_a["routes"] == [{"dst": "0.0.0.0/0", "gw": ip_a["gateway"]}]
    assert f"{ip_a['gateway']}/" in " ".join(addresses(host_netns, "nptbr1"))
    assert ping(a, ip_b["address"].split("/")[0])
    assert ping(b, ip_a["address"].split("/")[0])
    assert ping(a, ip_a["gateway"])
    assert {r["containerID"] for r in attachments(host)} == {"c1", "c2"}

    del_all(cbcni, "npt-br", added)
    assert attachments(host) == []
    assert host.veths() == set()


def test_del_on_an_emptied_store_succeeds_and_add_is_refused(
    cbcni: Cbcni, host: NetplugHost, containers: Callable[[], str]
) -> None:
    """A runtime retries a failed DEL forever: on a reset store netplug-ipam's DEL
    succeeds (nothing of it is on the host), while ADD keeps naming the fix."""
    write_two_networks(cbcni, host, "10.246.0.0/16")
    ctr = containers()
    cbcni.add("npt-br", ctr, container_id="c1")
    os.truncate(host.db, 0)
    cbcni.delete("npt-br", ctr, container_id="c1")
    assert link(ctr) is None
    refused = cbcni.run("add", "npt-br", containers(), container_id="c2", check=False)
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr  # cbcni shows the message, not the code
    assert "store was reset" in said and "recover" in said, said


def make_master(netns: str, name: str) -> None:
    """An up interface in `netns` for macvlan to sit on: a dummy, or where the kernel lacks
    the dummy module (this VM), one end of a veth pair whose peer is up as well."""
    made = run(["ip", "-n", netns, "link", "add", name, "type", "dummy"], check=False)
    if made.returncode != 0:
        assert "Unknown device type" in made.stderr, made.stderr
        run(["ip", "-n", netns, "link", "add", name, "type", "veth", "peer", "name", f"{name}p"])
        run(["ip", "-n", netns, "link", "set", f"{name}p", "up"])
    run(["ip", "-n", netns, "link", "set", name, "up"])


def test_macvlan_with_netplug_ipam(
    cbcni: Cbcni, host: NetplugHost, host_netns: str, containers: Callable[[], str]
) -> None:
    make_master(host_netns, "d0")
    cbcni.write_network(
        {
            "cniVersion": "1.0.0",
            "name": "npt-mv",
            "plugins": [
                {"type": "macvlan", "master": "d0", "mode": "bridge", "ipam": ipam(host)},
            ],
        }
    )
    added = add_two(cbcni, "npt-mv", containers)
    (_, a, res_a), (_, b, res_b) = added
    assert res_a["interfaces"][0]["name"] == "eth0"
    assert link(a)["link_type"] == "ether"
    ip_a, ip_b = res_a["ips"][0]["address"], res_b["ips"][0]["address"]
    assert ip_a != ip_b
    assert ping(a, ip_b.split("/")[0])
    assert ping(b, ip_a.split("/")[0])
    assert {r["containerID"] for r in attachments(host)} == {"c1", "c2"}

    del_all(cbcni, "npt-mv", added)
    assert attachments(host) == []


def write_two_networks(cbcni: Cbcni, host: NetplugHost, bridge_subnet: str) -> None:
    """netplug's own network npt-np on SUBNET, and bridge + netplug-ipam npt-br."""
    cbcni.write_network(
        {
            "cniVersion": "1.0.0",
            "name": "npt-np",
            "plugins": [plugin_conf(host, subnet=SUBNET, ipMasq=False)],
        }
    )
    bridge = {
        "type": "bridge",
        "bridge": "nptbr1",
        "isGateway": True,
        "ipMasq": False,
        "ipam": ipam(host, subnet=bridge_subnet),
    }
    cbcni.write_network({"cniVersion": "1.0.0", "name": "npt-br", "plugins": [bridge]})


def test_netplug_and_netplug_ipam_share_a_store(
    cbcni: Cbcni, host: NetplugHost, containers: Callable[[], str]
) -> None:
    """One store, one host, two networks on their own subnets (netplug's own and bridge
    with netplug-ipam): each container gets its own address and reaches its own gateway."""
    write_two_networks(cbcni, host, "10.246.0.0/16")
    a, b = containers(), containers()
    ip_a = cbcni.add("npt-np", a, container_id="c1")["ips"][0]
    ip_b = cbcni.add("npt-br", b, container_id="c2")["ips"][0]
    assert len(attachments(host)) == 2
    try:
        assert ip_interface(ip_a["address"]).network != ip_interface(ip_b["address"]).network
        assert ping(a, ip_a["gateway"])
        assert ping(b, ip_b["gateway"])
    finally:
        cbcni.delete("npt-np", a, container_id="c1")
        cbcni.delete("npt-br", b, container_id="c2")
    assert attachments(host) == []


def test_a_network_overlapping_another_is_refused(
    cbcni: Cbcni, host: NetplugHost, containers: Callable[[], str]
) -> None:
    """Two networks on one subnet would lease the same blocks and put one gateway on two
    bridges: the second is refused with a config error naming both, and nothing is made."""
    write_two_networks(cbcni, host, SUBNET)
    a, b = containers(), containers()
    cbcni.add("npt-np", a, container_id="c1")
    done = cbcni.run("add", "npt-br", b, container_id="c2", check=False)
    assert done.returncode != 0
    assert "overlaps" in done.stderr and "npt-np" in done.stderr
    assert [r["containerID"] for r in attachments(host)] == ["c1"]
    cbcni.delete("npt-np", a, container_id="c1")


@pytest.mark.parametrize(
    "routes",
    [5, [{"dst": 5}], [{"dst": "0.0.0.0/0", "gw": "fd00::1"}], [{"dst": "0.0.0.0/0"}, "x"]],
)
def test_bad_routes_are_refused_before_an_address_is_taken(
    plain_host: NetplugHost, container_netns: str, routes: object
) -> None:
    """netplug-ipam alone, as bridge runs it: a config whose ``routes`` cannot be used
    is code 7 naming the route, and the store holds no allocation afterwards (the
    routes were once read after the allocation: ``5`` was a 999 with a traceback that
    kept the address, ``{"dst": 5}`` a route to 0.0.0.5/32)."""
    conf = {
        "cniVersion": "1.0.0",
        "name": "npt-br",
        "type": "bridge",
        "ipam": ipam(plain_host, routes=routes),
    }
    done = plain_host.call(
        "ADD", conf, container_id="c1", netns=container_netns, plugin="netplug-ipam"
    )
    assert done.code == 7, done.stdout
    assert "ipam.routes" in done.out["msg"]
    assert attachments(plain_host) == []
    assert not [k for k in plain_host.records() if k.startswith("/netplug/ips/")]
