"""A host's life past the first ADD: a reboot that wipes runDir (a tmpfs) and the
containers' namespaces while the store keeps the host's records, and what ADD,
DEL and ``netplugctl`` make of it afterwards."""

from __future__ import annotations

import json
import shutil

import pytest
from policy_hosts import ctl

from netplug_env import ping
from runtimes import run

pytestmark = pytest.mark.netns


def reboot(host, *namespaces: str) -> None:
    """What a reboot leaves of a host: the store as it was; no runDir, no container
    namespaces (their veths go with them), no DEL ever sent."""
    for netns in namespaces:
        run(["ip", "netns", "del", netns])
    shutil.rmtree(host.run_dir)


def test_a_container_started_again_after_a_reboot_survives_gc(netplug_host, containers):
    """podman starts a container again after a reboot with its old ID and a new
    namespace, and no DEL before. The ADD keeps its addresses; its record now names
    the new namespace and names, so ``netplugctl gc`` keeps it (it released the
    running container's addresses, the record still naming the dead namespace)."""
    conf = netplug_host.conf()
    before = containers()
    first = netplug_host.add(conf, "c1", before, env={"CNI_ARGS": "K8S_POD_NAME=web"})
    reboot(netplug_host, before)
    after = containers()
    again = netplug_host.add(conf, "c1", after, env={"CNI_ARGS": "K8S_POD_NAME=web2"})
    assert again["ips"] == first["ips"]

    listed = json.loads(ctl(netplug_host, "gc", "--dry-run", "--json"))
    assert listed == []
    ctl(netplug_host, "gc")
    (record,) = netplug_host.records("/netplug/attachments/").values()
    assert record["netns"].endswith(after) and record["names"] == ["web2"]
    assert ping(after, again["ips"][0]["gateway"])
