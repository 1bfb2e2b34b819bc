"""Several networks on one host, as ``netplugctl install`` writes them, and the MTU every
container gets whatever attached and detached before it; with and without netplugd."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from netplug_clients import link

from netplug_env import BIN, NetplugHost, ping
from runtimes import REFERENCE_PLUGIN_DIR, Cbcni, run

pytestmark = pytest.mark.netns

UNDERLAY_VETHS = {"npt-under", "npt-under-p"}
UNDERLAY_MTU = 1500
OVERLAY_MTU = UNDERLAY_MTU - 50  # what "mtu": 0 means over a 1500-byte underlay


def give_underlay(netns: str) -> None:
    """A default route through a link with a documentation address: what makes netplug
    build each network's VXLAN device (its underlay MTU decides the overlay's). A veth
    whose peer stays in the namespace: this kernel has no dummy devices."""
    ip = ["ip", "-n", netns]
    near, far = sorted(UNDERLAY_VETHS)
    run([*ip, "link", "add", near, "mtu", str(UNDERLAY_MTU), "type", "veth", "peer", far])
    run([*ip, "addr", "add", "192.0.2.10/24", "dev", near])
    for end in (near, far):
        run([*ip, "link", "set", end, "up"])
    run([*ip, "route", "add", "default", "via", "192.0.2.1", "dev", near])


@pytest.fixture
def cni_plugin_dirs(tmp_path: Path) -> list[Path]:
    """Where the test's ``netplugctl install`` puts the plugins, then the reference ones."""
    return [tmp_path / "cni-bin", REFERENCE_PLUGIN_DIR]


def install(host: NetplugHost, cbcni: Cbcni, network: str, subnet: str) -> dict[str, Any]:
    """``netplugctl install`` of `network` into the test's dirs; returns the conflist,
    whose log file and run dir then move into the test's tmp dir (not /var/log, /run).
    Without autostart: ``netplug_host`` says whether an agent runs."""
    run(
        [
            BIN / "netplugctl",
            "install",
            "--bin-dir",
            cbcni.plugin_dirs[0],
            "--conf-dir",
            cbcni.conf_dir,
            "--network",
            network,
            "--subnet",
            subnet,
            "--store",
            host.store,
            "--host-name-conf",
            host.host_name,
            "--no-autostart",
        ]
    )
    path = cbcni.conf_dir / f"50-{network}.conflist"
    conflist = json.loads(path.read_text())
    conflist["plugins"][0].update(logFile=str(host.log_file), runDir=str(host.run_dir))
    path.write_text(json.dumps(conflist))
    return conflist


def vxlan_ids(netns: str) -> dict[str, int]:
    out = run(["ip", "-n", netns, "-j", "-d", "link", "show", "type", "vxlan"]).stdout
    return {i["ifname"]: i["linkinfo"]["info_data"]["id"] for i in json.loads(out or "[]")}


def test_two_installed_networks_get_their_own_vnis(
    netplug_host: NetplugHost, cbcni: Cbcni, containers
) -> None:
    give_underlay(netplug_host.netns)
    for network, subnet in (("blue", "10.244.0.0/16"), ("red", "10.245.0.0/16")):
        conflist = install(netplug_host, cbcni, network, subnet)
        assert "vxlan" not in conflist["plugins"][0]  # the store assigns the VNI
    results = {}
    for network in ("blue", "red"):
        ctr = containers()
        results[network] = (ctr, cbcni.add(network, ctr, container_id=f"c-{network}"))
    records = netplug_host.records("/netplug/networks/")
    vnis = {name.rsplit("/", 1)[1]: r["vni"] for name, r in records.items()}
    assert vnis == {"blue": 4242, "red": 4243}
    assert vxlan_ids(netplug_host.netns) == {"npvx4242": 4242, "npvx4243": 4243}
    for ctr, result in results.values():
        (ip,) = result["ips"]
        assert ping(ctr, ip["gateway"])
        assert link(ctr)["mtu"] == OVERLAY_MTU
    # Installed again (as on another host), red ADDs on the VNI recorded for it.
    install(netplug_host, cbcni, "red", "10.245.0.0/16")
    cbcni.add("red", containers(), container_id="c-red-2")
    assert vxlan_ids(netplug_host.netns) == {"npvx4242": 4242, "npvx4243": 4243}


@pytest.mark.parametrize(("mtu", "expected"), [(0, OVERLAY_MTU), (1400, 1400)])
def test_a_container_after_the_network_emptied_gets_the_networks_mtu(
    netplug_host: NetplugHost, containers, mtu: int, expected: int
) -> None:
    """Once a bridge's last port leaves, the kernel puts its MTU back to 1500; the next
    container must still get the network's MTU (and so must the bridge)."""
    give_underlay(netplug_host.netns)
    conf = netplug_host.conf(mtu=mtu)
    for round_ in range(2):
        first, second = containers(), containers()
        netplug_host.add(conf, f"a{round_}", first)
        netplug_host.add(conf, f"b{round_}", second)
        assert (link(first)["mtu"], link(second)["mtu"]) == (expected, expected)
        assert netplug_host.links()["np-blue"]["mtu"] == expected
        netplug_host.delete(conf, f"a{round_}", first)
        netplug_host.delete(conf, f"b{round_}", second)
        assert netplug_host.veths() == UNDERLAY_VETHS
    late = containers()
    result = netplug_host.add(conf, "late", late)
    assert link(late)["mtu"] == expected
    assert result["interfaces"][2]["mtu"] == expected
    assert netplug_host.links()["np-blue"]["mtu"] == expected
    host_end = result["interfaces"][1]["name"]
    assert netplug_host.links()[host_end]["mtu"] == expected


def test_an_agent_started_after_the_network_emptied_gives_the_networks_mtu(
    plain_host: NetplugHost, containers
) -> None:
    """A restarted agent first sees the bridge as the kernel left it (1500) and keeps
    what it saw for its lifetime: it must not take that for the network's MTU."""
    give_underlay(plain_host.netns)
    conf = plain_host.conf()
    with plain_host.agent():
        ctr = containers()
        plain_host.add(conf, "a", ctr)
        plain_host.delete(conf, "a", ctr)
        assert plain_host.veths() == UNDERLAY_VETHS
    with plain_host.agent():
        for name in ("b", "c"):
            ctr = containers()
            plain_host.add(conf, name, ctr)
            assert link(ctr)["mtu"] == OVERLAY_MTU
        assert plain_host.links()["np-blue"]["mtu"] == OVERLAY_MTU


def test_the_vxlan_device_follows_the_networks_mtu(netplug_host: NetplugHost, containers) -> None:
    """The network's MTU changed in its config between ADDs: the next container, the
    bridge and the VXLAN device all get the new one. The device kept its first MTU,
    so after a raise a new container's full-size packets to other hosts no longer fit
    the overlay (the bridge and veths followed, the device did not)."""
    give_underlay(netplug_host.netns)
    for mtu in (1400, 1300, 1450):
        ctr = containers()
        netplug_host.add(netplug_host.conf(mtu=mtu), f"c{mtu}", ctr)
        links = netplug_host.links()
        assert (link(ctr)["mtu"], links["np-blue"]["mtu"], links["npvx4242"]["mtu"]) == (
            mtu,
            mtu,
            mtu,
        )


def test_another_bridge_for_a_network_with_containers_is_refused(
    netplug_host: NetplugHost, containers
) -> None:
    """The config's ``bridge`` changed between ADDs while the network has containers on
    this host: ADD used to put the block's gateway on a second bridge too (two routes
    to the block) and answer success for a container that reached nothing, not even
    its gateway. Now code 7 naming both bridges, and no second bridge is made."""
    a = containers()
    netplug_host.add(netplug_host.conf(), "a", a)
    b = containers()
    done = netplug_host.call("ADD", netplug_host.conf(bridge="br-other"), container_id="b", netns=b)
    assert done.code == 7, done.stdout
    assert "np-blue" in done.out["msg"] and "br-other" in done.out["msg"]
    assert "br-other" not in netplug_host.links()
    assert [r["containerID"] for r in netplug_host.records("/netplug/attachments/").values()] == [
        "a"
    ]
    assert link(b, "eth0") is None


def test_a_vxlan_port_other_than_the_networks_is_refused(
    netplug_host: NetplugHost, containers
) -> None:
    give_underlay(netplug_host.netns)
    netplug_host.add(netplug_host.conf(), "a", containers())
    done = netplug_host.call(
        "ADD", netplug_host.conf(vxlan={"port": 8472}), container_id="b", netns=containers()
    )
    assert done.code == 7, done.stdout
    assert "vxlan.port" in done.out["msg"] and "8472" in done.out["msg"]
    device = netplug_host.links()["npvx4242"]["linkinfo"]["info_data"]
    assert device["port"] == 4789
