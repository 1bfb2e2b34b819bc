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


def test_the_bridge_entries_are_permanent_until_del(netplug_host, containers):
    """The bridge's entries for a container (ARP and ND) are permanent: the box's
    neighbour tables, shared by every namespace, do not count them against
    gc_thresh3. DEL deletes them: nothing else would."""
    conf = netplug_host.conf(subnet6="fd00:244::/48")
    netplug_host.add(conf, "neighbour", containers())  # keeps the bridge's carrier up
    ctr = containers()
    result = netplug_host.add(conf, "perm", ctr)
    addresses = [ip["address"].split("/")[0] for ip in result["ips"]]
    mac = next(i["mac"] for i in result["interfaces"] if i.get("sandbox"))
    assert len(addresses) == 2

    for address in addresses:
        entries = netplug_host.neighbours(address)
        assert [(e["lladdr"], e["state"]) for e in entries] == [(mac, ["PERMANENT"])], entries

    netplug_host.delete(conf, "perm", ctr)
    assert [netplug_host.neighbours(a) for a in addresses] == [[], []]
    netplug_host.delete(conf, "perm", ctr)  # again: idempotent, nothing to delete


def test_gc_deletes_the_bridge_entries_of_what_it_releases(netplug_host, containers):
    conf = netplug_host.conf("1.1.0")
    kept = netplug_host.add(conf, "keep", containers())["ips"][0]["address"].split("/")[0]
    dropped = netplug_host.add(conf, "drop", containers())["ips"][0]["address"].split("/")[0]
    valid = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})

    assert netplug_host.call("GC", valid, ifname=None).status == 0

    assert netplug_host.neighbours(dropped) == []
    assert [e["state"] for e in netplug_host.neighbours(kept)] == [["PERMANENT"]]


def test_a_restarted_container_is_reached_at_once_by_its_neighbours(netplug_host, containers):
    """A container restarted (``podman restart``: DEL, then ADD of the same container
    ID) gets its address back; the containers of its host that talked to it reach
    it over the bridge with the MAC their neighbour caches hold. Its MAC follows
    from its address, so that one is still right: before, a new random MAC left it
    unreachable from them for 15-45 s, until their entries went stale."""
    conf = netplug_host.conf(subnet6="fd00:244::/48")
    server, client = containers(), containers()
    first = netplug_host.add(conf, "server", server)
    netplug_host.add(conf, "client", client)
    addresses = [ip["address"].split("/")[0] for ip in first["ips"]]
    assert all(ping(client, a) for a in addresses)  # the client caches the MAC
    netplug_host.delete(conf, "server", server)

    again = netplug_host.add(conf, "server", server)
    assert [ip["address"].split("/")[0] for ip in again["ips"]] == addresses
    assert [ping(client, a) for a in addresses] == [True, True]
