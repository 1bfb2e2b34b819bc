"""netplugd's loops when a host holds more than one block, and when a loop fails.

A host's second block (a second network here; dual stack or the 254th container
of a /24 are the same to the agent) used to kill the thread that programs the
overlay and the DNS listeners, silently. And a loop that fails must show: the
agent reports itself degraded (``netplugctl status``, /healthz, /metrics)
until the loop runs again.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from netplug.faults import ENV
from netplug.ipam.store.sqlite import SQLiteStore
from netplug.lab.lab import BIN, Lab

from netplug_env import eventually, http_get, sample
from runtimes import netns_path, run

pytestmark = pytest.mark.netns

GREEN = {
    "cniVersion": "1.0.0",
    "name": "green",
    "type": "netplug",
    "subnet": "10.245.0.0/16",
    "vxlan": {"vni": 4343},
}


def host_netns(lab: Lab, host: str) -> str:
    return lab.state.load()["hosts"][host]["netns"]


def add_green(lab: Lab, host: str, container_id: str, netns: str) -> str:
    """ADD ``netns`` to a second network on ``host`` (the lab's own is "lab")."""
    lab_conf = json.loads((lab.dir / host / "net.d" / "50-lab.conflist").read_text())
    plugin = lab_conf["plugins"][0]
    conf = {**GREEN, **{k: plugin[k] for k in ("store", "hostName", "logFile", "runDir")}}
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": str(netns_path(netns)),
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(BIN),
    }
    done = subprocess.run(
        ["ip", "netns", "exec", host_netns(lab, host), str(BIN / "netplug")],
        input=json.dumps(conf).encode(),
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout
    return json.loads(done.stdout)["ips"][0]["address"].split("/")[0]


def ping(netns: str, address: str) -> bool:
    cmd = ["ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "1", address]
    return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0


def resolve(netns: str, server: str, name: str) -> str:
    cmd = ["ip", "netns", "exec", netns, "dig", f"@{server}", "+tries=1", "+time=1", "+short"]
    return subprocess.run([*cmd, name], capture_output=True, text=True, timeout=10).stdout.strip()


def gateway(address: str) -> str:
    return address.rsplit(".", 1)[0] + ".1"


def netplugctl(netns: str, store: str, host: str, *args: str) -> str:
    """netplugctl's output, run in ``netns``: it asks that namespace's agent over @netplugd."""
    cmd = ["ip", "netns", "exec", netns, str(BIN / "netplugctl"), "--store", store]
    return run([*cmd, "--host-name", host, *args]).stdout


def status(netns: str, store: str, host: str) -> dict:
    (row,) = json.loads(netplugctl(netns, store, host, "--json", "status"))
    return row


@pytest.mark.parametrize("lab", ["sqlite"], indirect=True)
def test_a_hosts_second_block_keeps_the_overlay_and_dns_going(lab, containers):
    lab.up(2, lab.store_kind)
    c11 = lab.run_container("host1", "c11").split("/")[0]
    green = containers()
    green_address = add_green(lab, "host1", "g1", green)  # host1's second block
    store = lab.state.load()["store"]

    # The agent binds the new gateway's DNS, and keeps programming peers: a host
    # that joins afterwards is reachable from host1.
    green_dns = gateway(green_address)
    assert eventually(lambda: resolve(green, green_dns, "c11.lab.netplug.internal") == c11)
    lab.add_host(3)
    c31 = lab.run_container("host3", "c31").split("/")[0]
    assert eventually(lambda: ping(lab.container_netns("c11"), c31))
    assert status(host_netns(lab, "host1"), store, "host1")["agent"] == "running"

    # A restarted agent listens on both gateways at once.
    lab.stop_agent("host1")
    lab.start_agent("host1")
    assert eventually(lambda: resolve(green, green_dns, "c31.lab.netplug.internal") == c31)
    c11_netns = lab.container_netns("c11")
    assert eventually(lambda: resolve(c11_netns, gateway(c11), "c31") == c31)
    assert "Traceback" not in (lab.dir / "host1" / "netplugd.log").read_text()


NAMED_C1 = {"CNI_ARGS": "NETPLUG_NAME=c1"}


def test_a_malformed_record_is_skipped_counted_and_reported_not_fatal(plain_host, containers):
    """A record that is not JSON under the overlay's keys (as a foreign or broken
    writer leaves it) used to fail the overlay's every read, for every network."""
    ns = plain_host.netns
    bad_key = "/netplug/vteps/blue/ghost"
    extra = ("--upstream", "none", "--http", "127.0.0.1:8053")

    def agent() -> dict:
        return status(ns, plain_host.store, plain_host.host_name)

    def reported() -> list[dict]:
        return agent()["agentHealth"]["badRecords"]

    with plain_host.agent(None, *extra):
        assert agent()["agent"] == "running"
        store = SQLiteStore(str(plain_host.db))
        try:
            store.put(bad_key, b"not json")
            assert eventually(lambda: [r["key"] for r in reported()] == [bad_key], timeout=15)
            assert reported()[0]["part"] == "overlay"
            assert reported()[0]["error"].startswith("MalformedRecord: ")
            # The rest goes on: a container added now answers on its gateway.
            client = containers()
            c1 = plain_host.add(plain_host.conf(), "c1", client, env=NAMED_C1)
            c1 = c1["ips"][0]["address"].split("/")[0]
            assert eventually(lambda: resolve(client, gateway(c1), "c1") == c1)
            row = agent()
            assert row["agent"] == "running"
            assert all(loop["restarts"] == 0 for loop in row["agentHealth"]["loops"].values())
            assert http_get(ns, "/healthz")[0] == 200
            metrics = http_get(ns, "/metrics")[1]
            assert sample(metrics, 'netplug_agent_bad_records_total{part="overlay"}') == 1
            store.delete(bad_key)
        finally:
            store.close()
        assert eventually(lambda: reported() == [], timeout=15)
    log = plain_host.agent_log()
    assert log.count(f"skipping unreadable record {bad_key}") == 1  # once, not per reconcile
    assert "Traceback" not in log


# The agent's parts, each killed in turn through its named failure point (netplug.faults):
# its loop fails FAILS times, restarted after 0.5 + 1 + 2 + 4 s of backoff, and counts
# as failing until it has run 5 s more: long enough to see the other parts serve.
FAILS = 4
PARTS = [
    "store-view",
    "overlay",
    "dns-registry",
    "dns-listeners",
    "pending-releases",
    "policy-copy",
]
FEEDS_DNS = {"store-view", "dns-registry", "dns-listeners"}  # DNS waits for these


@pytest.mark.parametrize("part", PARTS)
def test_a_killed_part_is_restarted_while_the_others_serve(
    plain_host, containers, monkeypatch, part
):
    ns = plain_host.netns
    extra = ("--upstream", "none", "--http", "127.0.0.1:8053")
    monkeypatch.setenv(ENV, f"{part}*{FAILS}")  # netplugd inherits the test's environment

    def loops() -> dict:
        return status(ns, plain_host.store, plain_host.host_name)["agentHealth"]["loops"]

    def failing() -> bool:
        return loops()[part]["state"] == "failing"

    client = containers()
    with plain_host.agent(None, *extra):
        assert eventually(failing, timeout=15)
        # While it fails: plugin calls are served by the agent, and DNS answers
        # unless the part is one DNS needs.
        c1 = plain_host.add(plain_host.conf(), "c1", client, env=NAMED_C1)
        c1 = c1["ips"][0]["address"].split("/")[0]
        if part not in FEEDS_DNS:
            assert eventually(lambda: resolve(client, gateway(c1), "c1") == c1)
        others = {name: loop for name, loop in loops().items() if name != part}
        assert failing(), "the part recovered before the others were seen serving"
        assert all(loop["state"] == "ok" and loop["restarts"] == 0 for loop in others.values())
        metrics = http_get(ns, "/metrics")[1]
        assert sample(metrics, f'netplug_agent_loop_up{{loop="{part}"}}') == 0
        assert sample(metrics, 'netplug_cni_calls_total{command="ADD",result="ok"}') == 1

        # Then it is restarted for good, and everything serves.
        last = f"InjectedFault: injected failure in {part}"
        recovered = {"state": "ok", "restarts": FAILS, "lastError": last}
        assert eventually(lambda: loops()[part] == recovered, timeout=40)
        assert eventually(lambda: resolve(client, gateway(c1), "c1") == c1)
    log = plain_host.agent_log()
    assert log.count(f"loop {part} failed; restarting in") == FAILS
    assert f"InjectedFault: injected failure in {part}" in log


def test_a_full_block_gives_a_second_one_that_the_agent_serves(plain_host, containers):
    """The other way to a second block: the first one fills up (a /29: 5 containers;
    the 254th container of a /24 is the same path), on a dual-stack network. The
    agent keeps every loop running and answers DNS on both gateways, also after a
    restart."""
    ns, host = plain_host.netns, plain_host.host_name
    conf = plain_host.conf(subnet6="fd00:245::/48", hostBlockPrefix=29, hostBlockPrefix6=125)
    with plain_host.agent():
        named = {}
        for i in range(7):
            client = containers()
            out = plain_host.add(conf, f"c{i}", client, env={"CNI_ARGS": f"NETPLUG_NAME=c{i}"})
            (v4, gw), (v6, _) = ((ip["address"].split("/")[0], ip["gateway"]) for ip in out["ips"])
            assert ":" in v6 and ":" not in v4
            named[f"c{i}"] = (client, v4, gw)
        gateways = {gw for _, _, gw in named.values()}
        assert len(gateways) == 2  # the sixth container opened a second block
        row = status(ns, plain_host.store, host)
        assert row["agent"] == "running"
        assert all(loop["restarts"] == 0 for loop in row["agentHealth"]["loops"].values())
        for name, (client, v4, gw) in named.items():
            assert eventually(lambda c=client, a=v4, g=gw, n=name: resolve(c, g, n) == a)
    with plain_host.agent():  # a restarted agent listens on both gateways at once
        for name, (client, v4, gw) in named.items():
            assert eventually(lambda c=client, a=v4, g=gw, n=name: resolve(c, g, n) == a)
