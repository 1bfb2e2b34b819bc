"""etcd stopped under a running 2-host lab: what fails, what keeps working, recovery."""

from __future__ import annotations

import subprocess
import time

import pytest

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

    lab.remove_container("b")  # DEL succeeds: interfaces go, the release waits
    assert eventually(lambda: container_veths(lab, "host2") == set())

    lab.start_etcd()
    assert eventually(lambda: attachment_ids(lab) == {"a"}, timeout=15)  # release replayed
    c = lab.run_container("host2", "c").split("/")[0]  # no restart anywhere
    assert eventually(lambda: ping(lab, "a", c), timeout=10)
