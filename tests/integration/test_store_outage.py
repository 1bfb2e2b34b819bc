"""etcd stopped under a running 2-host lab: what fails, what keeps working, recovery."""

from __future__ import annotations

import subprocess
import time

import pytest

from netplug_env import eventually
from runtimes import run

pytestmark = pytest.mark.netns


def ping(lab, src: str, address: str) -> bool:
    cmd = ["ip", "netns", "exec", lab.container_netns(src), "ping", "-c", "1", "-W", "1", address]
    return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0


def attachment_ids(lab) -> set[str]:
    with lab.store() as store:
        return {
            kv.key.rsplit("/", 2)[1] for kv in store.range("/netplug/attachments/", prefix=True).kvs
        }


def test_store_outage_fails_adds_cleanly_keeps_traffic_and_recovers(lab):
    lab.up(2, "etcd")
    lab.run_container("host1", "a")
    b = lab.run_container("host2", "b").split("/")[0]
    assert eventually(lambda: ping(lab, "a", b))
    host1 = lab.state.load()["hosts"]["host1"]["netns"]
    veths_before = run(["ip", "-n", host1, "-o", "link", "show", "type", "veth"]).stdout

    lab.stop_etcd()
    started = time.monotonic()
    with pytest.raises(RuntimeError) as failed:
        lab.run_container("host1", "c")
    assert time.monotonic() - started < 7  # 5 s budget, plus the plugin's own start
    assert '"code": 11' in str(failed.value)
    assert run(["ip", "-n", host1, "-o", "link", "show", "type", "veth"]).stdout == veths_before
    assert ping(lab, "a", b)  # the programmed overlay stays

    lab.remove_container("b")  # DEL succeeds: interfaces go, the release waits
    host2 = lab.state.load()["hosts"]["host2"]["netns"]
    assert run(["ip", "-n", host2, "-o", "link", "show", "type", "veth"]).stdout == ""

    lab.start_etcd()
    assert eventually(lambda: attachment_ids(lab) == {"a"}, timeout=15)  # release replayed
    c = lab.run_container("host2", "c").split("/")[0]  # no restart anywhere
    assert eventually(lambda: ping(lab, "a", c), timeout=10)
