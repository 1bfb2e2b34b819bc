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


def read_only(directory) -> list[str]:
    """A launcher: the command that follows runs in a mount namespace of its own in
    which ``directory`` is read-only (a remounted /run, a full or failing disk)."""
    remount = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", remount, "sh", directory]


def test_add_on_a_read_only_run_dir_is_refused_naming_it(plain_host, containers):
    """runDir holds what ADD writes beside the store (locks, each attachment's record):
    one that cannot be written is code 7 naming it and the fix, before anything
    changes (it was code 999 quoting a temporary file, after the address was taken)."""
    conf = plain_host.conf()
    plain_host.add(conf, "c0", containers())  # runDir made, the bridge there
    before = (plain_host.veths(), plain_host.records("/netplug/attachments/"))
    launcher = read_only(str(plain_host.run_dir))
    done = plain_host.call("ADD", conf, container_id="c1", netns=containers(), launcher=launcher)
    assert done.code == 7, done.stdout
    assert str(plain_host.run_dir) in done.out["msg"] and "writable" in done.out["msg"]
    assert (plain_host.veths(), plain_host.records("/netplug/attachments/")) == before


def test_del_on_a_read_only_run_dir_frees_the_interfaces_and_addresses(plain_host, containers):
    """A runtime retries a failed DEL for ever (a pod stuck terminating): on a runDir
    that became read-only DEL still deletes the veth pair and releases the addresses,
    and succeeds; what is under runDir waits (it failed with code 999 every time)."""
    conf = plain_host.conf()
    ctr = containers()
    plain_host.add(conf, "c1", ctr)
    launcher = read_only(str(plain_host.run_dir))
    for _ in range(2):  # and again: idempotent
        done = plain_host.call("DEL", conf, container_id="c1", netns=ctr, launcher=launcher)
        assert done.status == 0, done.stdout
    assert plain_host.veths() == set()
    assert plain_host.records("/netplug/attachments/") == {}
    assert plain_host.records("/netplug/ips/") == {}
