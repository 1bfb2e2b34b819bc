"""One container on two netplug networks, eth0 on blue and eth1 on red, as podman's
``--network blue,red`` attaches it: each attachment reaches its whole network,
passes CHECK, and is left whole when the other goes."""

from __future__ import annotations

from ipaddress import ip_interface

import pytest

from netplug_env import container_addresses, ping

pytestmark = pytest.mark.netns

RED = "10.245.0.0/16"


def attach_both(host, ctr, cid, **red_fields):
    """ADD ``ctr`` to blue as eth0, then to red as eth1: (blue conf, red conf, results)."""
    blue = host.conf()
    red = host.conf(name="red", subnet=RED, **red_fields)
    return blue, red, host.add(blue, cid, ctr), host.add(red, cid, ctr, ifname="eth1")


def check(host, conf, result, cid, ctr, ifname):
    return host.call(
        "CHECK", dict(conf, prevResult=result), container_id=cid, netns=ctr, ifname=ifname
    )


def address(result) -> str:
    return result["ips"][0]["address"].split("/")[0]


def block(result):
    return ip_interface(result["ips"][0]["address"]).network


def test_each_attachment_of_a_container_on_two_networks_passes_check(netplug_host, containers):
    """eth0 keeps the default route; eth1, which cannot have another, gets a route
    to red's subnet, reports that one, and CHECK finds it (CHECK of eth1 once failed:
    "default route via 10.245.x.1 is missing", a route ADD had never made)."""
    ctr = containers()
    blue, red, r0, r1 = attach_both(netplug_host, ctr, "c1")
    assert r0["routes"] == [{"dst": "0.0.0.0/0", "gw": r0["ips"][0]["gateway"]}]
    assert r1["routes"] == [{"dst": RED, "gw": r1["ips"][0]["gateway"]}]
    assert r1["dns"] == {
        "nameservers": [r1["ips"][0]["gateway"]],
        "search": ["red.netplug.internal"],
    }
    for conf, result, ifname in ((blue, r0, "eth0"), (red, r1, "eth1")):
        done = check(netplug_host, conf, result, "c1", ctr, ifname)
        assert done.status == 0, done.stdout
    assert ping(ctr, r0["ips"][0]["gateway"]) and ping(ctr, r1["ips"][0]["gateway"])


def test_the_second_network_reaches_its_other_blocks(netplug_host, containers):
    """red in /30 blocks, so each container has a block of its own, as containers on
    other hosts have: x (blue eth0, red eth1) and y (red) reach each other over red.
    Before, x's packets to y left through eth0 from x's blue address, and the
    isolation between blue and red dropped them."""
    x, y = containers(), containers()
    _, red, _, rx = attach_both(netplug_host, x, "x", hostBlockPrefix=30)
    ry = netplug_host.add(red, "y", y)
    assert block(rx) != block(ry)
    assert ping(x, address(ry))
    assert ping(y, address(rx))


def test_del_of_one_attachment_leaves_the_other_whole(netplug_host, containers):
    """DEL of eth0 (and a GC of blue that keeps nothing) leave eth1 with its
    address and route, passing CHECK and reaching red's other blocks."""
    x, y = containers(), containers()
    blue, red, _, rx = attach_both(netplug_host, x, "x", hostBlockPrefix=30)
    ry = netplug_host.add(red, "y", y)
    netplug_host.delete(blue, "x", x)
    gc = dict(netplug_host.conf("1.1.0"), **{"cni.dev/valid-attachments": []})
    assert netplug_host.call("GC", gc, ifname=None).status == 0
    assert container_addresses(x, "eth1") == [rx["ips"][0]["address"]]
    assert check(netplug_host, red, rx, "x", x, "eth1").status == 0
    assert ping(x, address(ry))
    kept = netplug_host.records("/netplug/attachments/")
    assert sorted((r["containerID"], r["ifname"]) for r in kept.values()) == [
        ("x", "eth1"),
        ("y", "eth0"),
    ]


def test_a_late_del_of_a_left_network_spares_the_attachment_that_took_its_ifname(
    netplug_host, containers
):
    """podman ``network disconnect blue`` then ``connect red`` gives red the freed eth0;
    a DEL of blue's old attachment that comes late (a runtime's retry, libcni's GC of a
    stale cache entry) must not take red's eth0 with it, leaving red's record without
    an interface."""
    ctr = containers()
    blue, red = netplug_host.conf(), netplug_host.conf(name="red", subnet=RED)
    netplug_host.add(blue, "c1", ctr)
    netplug_host.delete(blue, "c1", ctr)
    result = netplug_host.add(red, "c1", ctr)
    netplug_host.delete(blue, "c1", ctr)  # late: blue's attachment is long gone
    assert container_addresses(ctr) == [result["ips"][0]["address"]]
    assert check(netplug_host, red, result, "c1", ctr, "eth0").status == 0
