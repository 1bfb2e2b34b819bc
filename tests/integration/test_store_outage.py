"""etcd stopped under a running 2-host lab: what fails, what keeps working, recovery."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from netplug.ipam.pending import PendingReleases
from netplug.net.veth import is_host_veth_name

from netplug_env import eventually
from runtimes import run

pytestmark = pytest.mark.netns


def ping(lab, src: str, address: str) -> bool:
    cmd = ["ip", "netns", "exec", lab.container_netns(src), "ping", "-c", "1", "-W", "1", address]
    return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0


def container_veths(lab, host: str) -> set[str]:
    """netplug's host-side veths on ``host`` (the lab's underlay is a veth too)."""
    netns = lab.state.load()["hosts"][host]["netns"]
    out = run(["ip", "-n", netns, "-o", "link", "show", "type", "veth"]).stdout
    names = {line.split(": ")[1].split("@")[0] for line in out.splitlines()}
    return {name for name in names if is_host_veth_name(name)}


def attachment_ids(lab) -> set[str]:
    with lab.store() as store:
        return {
            kv.key.rsplit("/", 2)[1] for kv in store.range("/netplug/attachments/", prefix=True).kvs
        }


@pytest.mark.parametrize("lab", ["etcd"], indirect=True)
def test_store_outage_fails_adds_cleanly_keeps_traffic_and_recovers(lab):
    lab.up(2, lab.store_kind)
    lab.run_container("host1", "a")
    b = lab.run_container("host2", "b").split("/")[0]
    assert eventually(lambda: ping(lab, "a", b))
    veths_before = container_veths(lab, "host1")

    lab.stop_etcd()
    started = time.monotonic()
    with pytest.raises(RuntimeError) as failed:
        lab.run_container("host1", "c")
    assert time.monotonic() - started < 8  # 5 s budget, plus the plugin's start on a loaded machine
    assert '"code": 11' in str(failed.value)
    assert container_veths(lab, "host1") == veths_before
    assert eventually(lambda: ping(lab, "a", b))  # the programmed overlay stays
    # status: the store's error, and still the agent's word (what an outage needs).
    cmd = lab.netplugctl("host1", "--json", "status")
    shown = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 1 and "try again later" in shown.stderr, shown
    (row,) = json.loads(shown.stdout)
    assert "storeError" in row and row["agent"] == "running" and row["agentHealth"]["loops"], row

    lab.remove_container("b")  # DEL succeeds: interfaces go, the release waits
    assert eventually(lambda: container_veths(lab, "host2") == set())

    lab.start_etcd()
    assert eventually(lambda: attachment_ids(lab) == {"a"}, timeout=15)  # release replayed
    c = lab.run_container("host2", "c").split("/")[0]  # no restart anywhere
    assert eventually(lambda: ping(lab, "a", c), timeout=10)


@pytest.mark.parametrize("lab", ["etcd"], indirect=True)
def test_a_del_during_an_outage_does_not_wait_for_other_releases(lab):
    """40 releases wait for the store; the agent keeps replaying them (every 5 s).
    A DEL used to queue behind the whole replay (the store's timeout for each
    entry, under the file's lock) and time out with code 11; now each DEL pays
    only its own attempt and records its release beside the others."""
    lab.up(1, lab.store_kind)
    names = [f"d{i}" for i in range(6)]
    for name in names:
        lab.run_container("host1", name)  # the agent now replays this runDir's releases
    lab.stop_etcd()
    pending = PendingReleases(str(lab.dir / "host1" / "run"), "host1")
    for i in range(40):
        pending.record("lab", f"ghost-{i}", "eth0", "")
    took = {}
    for name in names:  # one after the other: about 7 s, across at least one replay
        started = time.monotonic()
        lab.cni("DEL", name, "host1")
        took[name] = round(time.monotonic() - started, 2)
    print(f"DEL latencies (s) with 40+ releases pending: {took}")
    assert max(took.values()) < 3, took
    recorded = {json.loads(line)["containerID"] for line in pending.path.read_text().splitlines()}
    assert recorded == {*names, *(f"ghost-{i}" for i in range(40))}

    lab.start_etcd()
    assert eventually(lambda: attachment_ids(lab) == set() and not pending, timeout=20)
