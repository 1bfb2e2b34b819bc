"""An address handed out again reaches its new container at once.

A host whose blocks are full reuses an address as soon as a container goes;
the gateway's neighbour cache still maps it to the old container's MAC for up
to a minute (the kernel confirms a REACHABLE entry only after 15-45 s), and
traffic routed to the host for it went to a MAC that no longer exists: a new
container on a full host stayed unreachable from the other hosts (scale_bench,
1000 containers on one host). ADD tells the bridge the new MAC.
"""

from __future__ import annotations

from netplug_env import ping


def test_a_reused_address_reaches_the_new_container_at_once(netplug_host, containers):
    conf = netplug_host.conf()
    # Another container keeps the bridge's carrier up, as on a busy host: an
    # emptied bridge loses its carrier, and the kernel flushes its neighbours.
    netplug_host.add(conf, "neighbour", containers())
    first = containers()
    address = netplug_host.add(conf, "old", first)["ips"][0]["address"].split("/")[0]
    assert ping(netplug_host.netns, address)  # the gateway now caches the old MAC
    netplug_host.delete(conf, "old", first)

    again = netplug_host.add(
        conf, "new", containers(), env={"CNI_ARGS": f"IgnoreUnknown=1;IP={address}"}
    )
    assert again["ips"][0]["address"].split("/")[0] == address
    assert ping(netplug_host.netns, address), "the gateway still sends to the old MAC"
