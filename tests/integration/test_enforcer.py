"""Segmentation and policies enforced by netplugd and ADD alone: no rules loaded by hand.

Real traffic between container namespaces on a host namespace running the
agent (or, for the no-agent case, the plugin alone): networks isolated by
default, ``isolate: false`` opening a network, ``netplugctl policy apply`` in
force within a second and ``policy delete`` reopening, an agent killed with
SIGKILL and restarted changing nothing, and a denied client hammering a
container while it is being added never getting through.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from ipaddress import ip_interface

import pytest

from netplug_env import BIN, NetplugHost, eventually, ping
from runtimes import require_commands

pytestmark = pytest.mark.netns

PORT = 8080
SERVER = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET6)\n"
    "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('::', int(sys.argv[1]))); s.listen(64)\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hi'); c.close()\n"
)
CLIENT = (
    "import socket, sys\n"
    "try:\n"
    "    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)\n"
    "    sys.exit(0 if c.recv(2) == b'hi' else 1)\n"
    "except OSError:\n"
    "    sys.exit(1)\n"
)
# Connects in a tight loop for argv[3] seconds; prints how many got through.
HAMMER = (
    "import socket, sys, time\n"
    "end, n = time.monotonic() + float(sys.argv[3]), 0\n"
    "while time.monotonic() < end:\n"
    "    try:\n"
    "        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.05)\n"
    "        n += c.recv(2) == b'hi'; c.close()\n"
    "    except OSError:\n"
    "        time.sleep(0.001)\n"
    "print(n)\n"
)
SUBNETS = {
    "red": ("10.51.0.0/16", "fd51::/48"),
    "green": ("10.52.0.0/16", "fd52::/48"),
    "open": ("10.53.0.0/16", "fd53::/48"),
}


def tcp(netns: str, address: str) -> bool:
    cmd = ["ip", "netns", "exec", netns, sys.executable, "-c", CLIENT, address, str(PORT)]
    return subprocess.run(cmd, capture_output=True, timeout=15).returncode == 0


def reaches(netns: str, address: str) -> bool:
    return ping(netns, address) and tcp(netns, address)


def blocked(netns: str, address: str) -> bool:
    return not ping(netns, address) and not tcp(netns, address)


@pytest.fixture
def servers():
    procs = []

    def start(netns: str) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", SERVER, str(PORT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "ready"

    try:
        yield start
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)


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
        started = time.monotonic()
        assert eventually(lambda: not tcp(other, site.address("db", 4)), timeout=5)
        assert time.monotonic() - started < 1 + 1.0  # in force within 1 s (one 1 s probe)
        for v in (4, 6):
            assert tcp(web, site.address("db", v))
            assert not tcp(other, site.address("db", v))
            assert not ping(web, site.address("db", v))  # icmp is not a listed port
            assert reaches(db, site.address("other", v))  # db's egress is unaffected

        # kill -9 and restart: nothing opens, nothing closes, throughout.
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(timeout=10)
        assert tcp(web, site.address("db", 4)) and not tcp(other, site.address("db", 4))
    with plain_host.agent():
        for _ in range(5):
            assert tcp(web, site.address("db", 4)) and not tcp(other, site.address("db", 4))
        assert blocked(web, site.address("g1", 4))

        # A denied client connecting in a tight loop while a selected db is ADDed.
        late = containers()
        servers(late)
        hammer = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                other,
                sys.executable,
                "-c",
                HAMMER,
                "10.51.0.200",
                str(PORT),
                "4",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)
        result = plain_host.add(
            site.conf("red"),
            "db-2",
            late,
            env={"CNI_ARGS": "NETPLUG_NAME=db;IP=10.51.0.200"},
        )
        assert result["ips"][0]["address"].startswith("10.51.0.200/")
        out, _ = hammer.communicate(timeout=30)
        assert out.strip() == "0", "a denied connection got through during ADD"
        assert tcp(web, "10.51.0.200")

        deleted = site.ctl("policy", "delete", "db-from-web")
        assert deleted.returncode == 0, deleted.stderr
        assert eventually(lambda: tcp(other, site.address("db", 4)), timeout=5)
        assert reaches(other, site.address("db", 6))


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
