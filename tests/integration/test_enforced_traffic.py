"""Segmentation and policies enforced by netplugd and ADD alone: no rules loaded by hand.

Real traffic between container namespaces on a host namespace running the
agent (or, for the no-agent case, the plugin alone): networks isolated by
default, ``isolate: false`` opening a network, ``netplugctl policy apply`` in
force within a second and ``policy delete`` reopening, an agent killed with
SIGKILL and restarted changing nothing, and a denied client hammering a
container while it is being added never getting through.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from ipaddress import ip_interface

import pytest

from netplug_env import BIN, NetplugHost, eventually, ping
from runtimes import require_commands
from traffic import PORT, blocked, counted, hammer, reaches, tcp

pytestmark = pytest.mark.netns

SUBNETS = {
    "red": ("10.51.0.0/16", "fd51::/48"),
    "green": ("10.52.0.0/16", "fd52::/48"),
    "open": ("10.53.0.0/16", "fd53::/48"),
}


class Site:
    """Containers on one host: ADD through the plugin, addresses remembered."""

    def __init__(self, host: NetplugHost, containers, servers) -> None:
        self.host, self.containers, self.servers = host, containers, servers
        self.made: dict[str, tuple[str, list]] = {}  # name -> (namespace, addresses)

    def conf(self, network: str, **fields) -> dict:
        v4, v6 = SUBNETS[network]
        return self.host.conf(name=network, subnet=v4, subnet6=v6, **fields)

    def add(self, name: str, network: str, netns: str | None = None, **fields) -> str:
        netns = netns or self.containers()
        env = {"CNI_ARGS": f"NETPLUG_NAME={name}"}
        result = self.host.add(self.conf(network, **fields), name, netns, env=env)
        self.made[name] = (netns, [ip_interface(i["address"]).ip for i in result["ips"]])
        self.servers(netns)
        return netns

    def ns(self, name: str) -> str:
        return self.made[name][0]

    def address(self, name: str, version: int) -> str:
        return str(next(a for a in self.made[name][1] if a.version == version))

    def ctl(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
        cmd = ["ip", "netns", "exec", self.host.netns, str(BIN / "netplugctl")]
        cmd += ["--store", self.host.store, "--host-name", self.host.host_name, *args]
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)


def wait_programmed(netns: str, policy: str, address: str, timeout: float = 5.0) -> None:
    """Returns once ``address`` is in ``policy``'s selected set on the host (polled
    every 10 ms, the time printed); fails the test past ``timeout``. How fast is
    bench/policy_bench.py's to measure (the 1 s bar): a test on a loaded CI box
    checks that it happens."""
    started = time.monotonic()
    cmd = ["ip", "netns", "exec", netns, "nft", "-j", "list", "set", "inet", "netplug"]
    while time.monotonic() - started < timeout:
        done = subprocess.run([*cmd, f"pol/{policy}/sel4"], capture_output=True, text=True)
        if done.returncode == 0 and f'"{address}"' in done.stdout:
            took = time.monotonic() - started
            print(f"{netns}: {policy} in force {took:.2f} s after policy apply returned")
            return
        time.sleep(0.01)
    raise AssertionError(f"{netns}: {address} not in {policy}'s set {timeout} s after apply")


def test_the_agent_isolates_networks_and_enforces_policies(plain_host, containers, servers):
    require_commands("nft", packages="nftables")
    site = Site(plain_host, containers, servers)
    with plain_host.agent() as agent:
        site.add("web", "red")
        site.add("db", "red")
        site.add("other", "red")
        site.add("g1", "green")
        site.add("o1", "open", isolate=False)
        web, db, other, g1, o1 = (site.ns(n) for n in ("web", "db", "other", "g1", "o1"))
        for v in (4, 6):  # isolated by default, both ways; open opts out
            assert blocked(web, site.address("g1", v)), f"red -> green v{v}"
            assert blocked(g1, site.address("web", v)), f"green -> red v{v}"
            assert reaches(web, site.address("db", v)), f"red -> red v{v}"
            assert reaches(o1, site.address("web", v)) and reaches(g1, site.address("o1", v))

        # An ingress policy: only web reaches db, on PORT only.
        policy = {
            "name": "db-from-web",
            "network": "red",
            "select": {"names": ["db"]},
            "ingress": [
                {"from": [{"names": ["web"]}], "ports": [{"protocol": "tcp", "port": PORT}]}
            ],
        }
        applied = site.ctl("policy", "apply", "-", stdin=json.dumps(policy))
        assert applied.returncode == 0, applied.stderr
        wait_programmed(plain_host.netns, "db-from-web", site.address("db", 4))
        for v in (4, 6):
            assert tcp(web, site.address("db", v))
            assert not tcp(other, site.address("db", v))
            assert not ping(web, site.address("db", v))  # icmp is not a listed port
            assert reaches(db, site.address("other", v))  # db's egress is unaffected

        # kill -9 and restart: nothing opens, nothing closes, throughout.
        allowed = hammer(web, site.address("db", 4), 6, attempt=1.0)
        denied = hammer(other, site.address("db", 4), 6)
        time.sleep(0.5)
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(timeout=10)
    with plain_host.agent():
        ok, failed = counted(allowed)
        assert ok > 0 and failed == 0, f"allowed: {ok} answered, {failed} not"
        assert counted(denied)[0] == 0, "a denied connection got through the restart"
        assert blocked(web, site.address("g1", 4))

        # A denied client connecting in a tight loop while a selected db is ADDed.
        late = containers()
        servers(late)
        loop = hammer(other, "10.51.0.200", 4)
        time.sleep(0.5)
        result = plain_host.add(
            site.conf("red"),
            "db-2",
            late,
            env={"CNI_ARGS": "NETPLUG_NAME=db;IP=10.51.0.200"},
        )
        assert result["ips"][0]["address"].startswith("10.51.0.200/")
        assert counted(loop)[0] == 0, "a denied connection got through during ADD"
        assert tcp(web, "10.51.0.200")

        deleted = site.ctl("policy", "delete", "db-from-web")
        assert deleted.returncode == 0, deleted.stderr
        assert eventually(lambda: tcp(other, site.address("db", 4)), timeout=5)
        assert reaches(other, site.address("db", 6))


DB_FROM_WEB = {
    "name": "db-from-web",
    "network": "red",
    "select": {"names": ["db"]},
    "ingress": [{"from": [{"names": ["web"]}], "ports": [{"protocol": "tcp", "port": PORT}]}],
}


@pytest.mark.parametrize("agent", ["feed stalled", "none"])
def test_a_denied_client_never_gets_through_while_the_target_is_added(
    plain_host, containers, servers, agent
):
    """ADD covers its container before answering: with an agent whose enforcer
    never gets its feed (``NETPLUG_FAULTS=enforcer``: only ADD's own call to it
    programs anything), and with no agent at all."""
    require_commands("nft", packages="nftables")
    site = Site(plain_host, containers, servers)
    site.add("web", "red")
    site.add("other", "red")
    applied = site.ctl("policy", "apply", "-", stdin=json.dumps(DB_FROM_WEB))
    assert applied.returncode == 0, applied.stderr
    target = containers()
    servers(target)  # listening before its interface exists
    launcher = ["ip", "netns", "exec", plain_host.netns, "env", "NETPLUG_FAULTS=enforcer"]
    with plain_host.agent(launcher) if agent != "none" else contextlib.nullcontext():
        loop = hammer(site.ns("other"), "10.51.0.200", 4)
        time.sleep(0.5)
        env = {"CNI_ARGS": "NETPLUG_NAME=db;IP=10.51.0.200"}
        plain_host.add(site.conf("red"), "db", target, env=env)
        assert counted(loop)[0] == 0, "a denied connection got through"
        assert tcp(site.ns("web"), "10.51.0.200")  # the allowed one does
        if agent != "none":
            assert "enforcer" in plain_host.agent_log()  # the part did fail: ADD covered


def test_without_an_agent_add_programs_the_table(plain_host, containers, servers):
    """No agent: ADD programs isolation itself; the last DEL removes the table."""
    require_commands("nft", packages="nftables")
    site = Site(plain_host, containers, servers)
    site.add("r1", "red")
    site.add("g1", "green")
    for v in (4, 6):
        assert blocked(site.ns("r1"), site.address("g1", v))
        assert blocked(site.ns("g1"), site.address("r1", v))
    assert "inet netplug" in plain_host.nft_tables()
    for name, network in (("r1", "red"), ("g1", "green")):
        plain_host.delete(site.conf(network), name, site.ns(name))
    assert "inet netplug" not in plain_host.nft_tables()


def test_an_agent_keeps_the_table_after_the_last_container(plain_host, containers, servers):
    """The host's last containers go: the agent keeps the table (the next ADD adds
    only its elements), and the containers after them are isolated all the same."""
    require_commands("nft", packages="nftables")
    site = Site(plain_host, containers, servers)
    with plain_host.agent():
        site.add("r1", "red")
        site.add("g1", "green")
        for name, network in (("r1", "red"), ("g1", "green")):
            plain_host.delete(site.conf(network), name, site.ns(name))
        assert "inet netplug" in plain_host.nft_tables()
        site.add("r2", "red")
        site.add("g2", "green")
        for v in (4, 6):
            assert blocked(site.ns("r2"), site.address("g2", v))
            assert blocked(site.ns("g2"), site.address("r2", v))


def test_agents_segment_networks_across_lab_hosts(lab_hosts, containers, servers):
    """Two lab hosts, each with red and green containers, only their agents running:
    isolated over the overlay both ways (v4, v6, ping and TCP); a policy applied
    is in force on both hosts within a second, and its deletion reopens."""
    require_commands("nft", packages="nftables")
    sites = {name: Site(host, containers, servers) for name, host in lab_hosts(2).items()}
    made = {}  # container -> its site
    for name, network, host in (
        ("web", "red", "host1"),
        ("g1", "green", "host1"),
        ("db", "red", "host2"),
        ("g2", "green", "host2"),
        ("other", "red", "host2"),
    ):
        sites[host].add(name, network)
        made[name] = sites[host]

    def ns(name: str) -> str:
        return made[name].ns(name)

    def address(name: str, version: int) -> str:
        return made[name].address(name, version)

    for v in (4, 6):
        assert eventually(lambda v=v: reaches(ns("web"), address("db", v)))  # red, across
        assert blocked(ns("web"), address("g2", v)) and blocked(ns("g2"), address("web", v))
        assert blocked(ns("g1"), address("db", v)) and blocked(ns("db"), address("g1", v))

    policy = {
        "name": "db-from-web",
        "network": "red",
        "select": {"names": ["db"]},
        "ingress": [{"from": [{"names": ["web"]}], "ports": [{"protocol": "tcp", "port": PORT}]}],
    }
    applied = sites["host1"].ctl("policy", "apply", "-", stdin=json.dumps(policy))
    assert applied.returncode == 0, applied.stderr
    for site in sites.values():
        wait_programmed(site.host.netns, "db-from-web", address("db", 4))
    for v in (4, 6):
        assert tcp(ns("web"), address("db", v))  # across hosts, allowed
        assert not tcp(ns("other"), address("db", v))  # same host, not selected as peer
    deleted = sites["host2"].ctl("policy", "delete", "db-from-web")
    assert deleted.returncode == 0, deleted.stderr
    assert eventually(lambda: tcp(ns("other"), address("db", 4)), timeout=5)
