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
