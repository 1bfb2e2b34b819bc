"""What a warm agent remembers of the host's shared devices is re-checked: a
fact found wrong is forgotten and the work done again (with and without netplugd)."""

from __future__ import annotations

import json

import pytest

from netplug_env import NetplugHost, ping
from runtimes import run

pytestmark = pytest.mark.netns


def bridge_addresses(host: NetplugHost, bridge: str) -> set[str]:
    out = run(["ip", "-n", host.netns, "-j", "addr", "show", "dev", bridge]).stdout
    return {f"{a['local']}/{a['prefixlen']}" for link in json.loads(out) for a in link["addr_info"]}


def test_a_gateway_deleted_from_the_bridge_is_restored_by_the_next_add(netplug_host, containers):
    conf = netplug_host.conf()
    first, second = containers(), containers()
    added = netplug_host.add(conf, "c1", first)
    bridge = added["interfaces"][0]["name"]
    (ip,) = added["ips"]
    gateway = f"{ip['gateway']}/{ip['address'].split('/')[1]}"
    assert gateway in bridge_addresses(netplug_host, bridge)

    run(["ip", "-n", netplug_host.netns, "addr", "del", gateway, "dev", bridge])
    assert gateway not in bridge_addresses(netplug_host, bridge)
    netplug_host.add(conf, "c2", second)

    assert gateway in bridge_addresses(netplug_host, bridge)
    assert ping(second, ip["gateway"])
    assert ping(first, ip["gateway"])


def gateway_of(added: dict) -> tuple[str, str, str]:
    """(bridge, gateway address, its prefix length) of an ADD's result."""
    (ip,) = added["ips"]
    return added["interfaces"][0]["name"], ip["gateway"], ip["address"].split("/")[1]


def test_a_gateway_moved_to_another_link_counts_as_missing(netplug_host, containers):
    """The address is still assigned in the namespace (a bind(2) would pass), but
    not on the bridge: the next ADD puts it back there."""
    conf = netplug_host.conf()
    bridge, gateway, prefix = gateway_of(netplug_host.add(conf, "c1", containers()))
    netns = netplug_host.netns
    run(["ip", "-n", netns, "link", "add", "npt-other", "type", "bridge"])
    run(["ip", "-n", netns, "addr", "del", f"{gateway}/{prefix}", "dev", bridge])
    run(["ip", "-n", netns, "addr", "add", f"{gateway}/{prefix}", "dev", "npt-other"])

    second = containers()
    netplug_host.add(conf, "c2", second)
    assert f"{gateway}/{prefix}" in bridge_addresses(netplug_host, bridge)


def test_a_gateway_with_another_prefix_counts_as_missing(netplug_host, containers):
    conf = netplug_host.conf()
    bridge, gateway, prefix = gateway_of(netplug_host.add(conf, "c1", containers()))
    netns = netplug_host.netns
    run(["ip", "-n", netns, "addr", "del", f"{gateway}/{prefix}", "dev", bridge])
    run(["ip", "-n", netns, "addr", "add", f"{gateway}/32", "dev", bridge])

    second = containers()
    netplug_host.add(conf, "c2", second)
    assert f"{gateway}/{prefix}" in bridge_addresses(netplug_host, bridge)
    assert ping(second, gateway)


def test_a_deleted_gateway_is_restored_under_ip_nonlocal_bind(netplug_host, containers):
    """With ip_nonlocal_bind every bind(2) succeeds: the check must not rest on it."""
    conf = netplug_host.conf()
    netns = netplug_host.netns
    run(["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1"])
    bridge, gateway, prefix = gateway_of(netplug_host.add(conf, "c1", containers()))
    run(["ip", "-n", netns, "addr", "del", f"{gateway}/{prefix}", "dev", bridge])

    second = containers()
    netplug_host.add(conf, "c2", second)
    assert f"{gateway}/{prefix}" in bridge_addresses(netplug_host, bridge)
    assert ping(second, gateway)
