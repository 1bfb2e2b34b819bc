"""podman 4.3 (CNI backend) runs containers on a netplug network, with and without netplugd.

Built on the harness that test_reference_harness.py proves (RUNTIMES.md): podman runs in
the test's host namespace, netplug's launchers come first in its plugin dirs.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from netplug_clients import (
    agent_in_mount_ns,
    attachments,
    install_plugins,
    nat_rules,
    plugin_conf,
    veths,
)

from netplug_env import BIN, NetplugHost, agents_in, eventually
from runtimes import Podman, netns_exec, run

pytestmark = pytest.mark.netns

NETWORK = "npt-np"
PING = ("ping", "-c", "2", "-W", "2")


@pytest.fixture
def cni_plugin_dirs(tmp_path: Path) -> list[Path]:
    return install_plugins(tmp_path / "cni-bin")


@pytest.fixture(
    params=[
        "agent",
        "agent-in-podman-mount-ns",
        "in-process",
    ]
)
def np_host(request: pytest.FixtureRequest, host_netns: str, tmp_path: Path) -> Iterator:
    """netplug's host state in `host_netns`, and how the plugin runs there:

    - ``agent``: netplugd started as ``NetplugHost.agent()`` does (``ip netns exec``, so a
      mount namespace of its own, as a systemd service next to a containerised runtime);
    - ``agent-in-podman-mount-ns``: netplugd in podman's mount namespace (as on a host where
      both share the root mount namespace);
    - ``in-process``: no agent.

    Request it before `podman`, so that the ``agent`` variant's agent outlives podman.
    """
    host = NetplugHost(host_netns, tmp_path / "host")
    if request.param == "agent":
        with host.agent():
            yield host
    elif request.param == "agent-in-podman-mount-ns":
        podman = request.getfixturevalue("podman")  # set up before, torn down after, this
        with agent_in_mount_ns(host, podman.dir / "mnt"):
            yield host
    else:
        yield host


def run_alpha_and_beta(podman: Podman, np_host: NetplugHost) -> None:
    """Containers alpha and beta (alias web) on a netplug network of ``np_host``."""
    podman.write_network(
        {
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [plugin_conf(np_host, capabilities={"aliases": True})],
        }
    )
    podman.run("alpha", NETWORK)
    podman.run("beta", NETWORK, aliases=["web"])


def test_podman_containers_on_a_netplug_network(
    request: pytest.FixtureRequest, np_host: NetplugHost, podman: Podman
) -> None:
    agent = request.node.callspec.params["np_host"] != "in-process"
    run_alpha_and_beta(podman, np_host)
    ip_a, ip_b = podman.ip("alpha", NETWORK), podman.ip("beta", NETWORK)
    assert ip_a and ip_b and ip_a != ip_b

    podman.exec("alpha", *PING, ip_b)
    podman.exec("beta", *PING, ip_a)

    gateway = podman.inspect("alpha")["NetworkSettings"]["Networks"][NETWORK]["Gateway"]
    resolv = podman.exec("alpha", "cat", "/etc/resolv.conf").stdout
    assert f"search {NETWORK}.netplug.internal" in resolv, resolv
    # the network's nameserver comes first, before any of the host's
    assert re.findall(r"^nameserver (\S+)", resolv, re.M)[0] == gateway, resolv

    records = {r["containerID"]: r for r in attachments(np_host)}
    ids = {podman.inspect(n)["Id"]: n for n in ("alpha", "beta")}
    assert set(records) == set(ids)
    for cid, name in ids.items():
        assert records[cid]["names"][0] == name  # K8S_POD_NAME from podman's CNI_ARGS
    assert "web" in records[podman.inspect("beta")["Id"]]["names"]  # the alias
    assert len(veths(np_host.netns)) == 2

    podman.rm_all()
    assert attachments(np_host) == []
    assert np_host.veths() == set()
    assert list((podman.cni_cache_dir / "results").iterdir()) == []

    log = np_host.agent_log()
    for cid in ids:
        served = f"ADD container={cid} ifname=eth0 network={NETWORK} ok" in log
        assert served == agent, log
        assert (f"DEL container={cid} ifname=eth0 network={NETWORK} ok" in log) == agent


@pytest.mark.parametrize("np_host", ["agent"], indirect=True)
def test_podman_containers_resolve_each_other_by_name(np_host: NetplugHost, podman: Podman) -> None:
    """Through the resolv.conf podman writes from the result's dns: the gateway is the
    nameserver (netplugd answers there) and <network>.netplug.internal the search domain."""
    run_alpha_and_beta(podman, np_host)
    ip_b = podman.ip("beta", NETWORK)
    for name in ("beta", f"beta.{NETWORK}.netplug.internal", "web"):

        def answer(name: str = name) -> str:
            return podman.exec("alpha", "nslookup", name, check=False).stdout

        # Polled: on a loaded machine the agent's listener may bind a moment late.
        assert eventually(lambda: ip_b in answer(), timeout=10), (name, answer())
    podman.exec("alpha", *PING, "beta")


# Documentation addresses between the host namespace and a client namespace outside it.
HOST_ADDRESS, CLIENT_ADDRESS = "198.51.100.1", "198.51.100.2"
HTTPD = "echo hello > /tmp/index.html && exec httpd -f -p 80 -h /tmp"
# An HTTP GET's body (busybox wget crashes here; urllib would follow a proxy variable).
GET = (
    "import socket, sys\n"
    "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n"
    "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
    "reply = b''.join(iter(lambda: s.recv(4096), b''))\n"
    "print(reply.partition(b'\\r\\n\\r\\n')[2].decode(), end='')\n"
)


def install_network(host: NetplugHost, podman: Podman, bin_dir: Path, **fields) -> dict:
    """``netplugctl install``'s conflist in podman's network dir, its log file and run
    dir moved into the test's tmp dir (and ``fields`` added)."""
    run(
        [
            *(BIN / "netplugctl", "install", "--network", "npt-ports", "--store", host.store),
            *("--host-name-conf", host.host_name, "--bin-dir", bin_dir),
            *("--conf-dir", podman.network_dir),
        ]
    )
    path = podman.network_dir / "50-npt-ports.conflist"
    conflist = json.loads(path.read_text())
    conflist["plugins"][0].update(logFile=str(host.log_file), runDir=str(host.run_dir), **fields)
    path.write_text(json.dumps(conflist))
    return conflist


def client_outside(host_netns: str, client: str) -> None:
    """Join `client` to the host namespace by a veth pair made in the two namespaces."""
    run(["ip", "-n", client, "link", "add", "npt-c0", "type", "veth", "peer", "npt-h0"])
    run(["ip", "-n", client, "link", "set", "npt-h0", "netns", host_netns])
    for netns, ifname, address in (
        (client, "npt-c0", CLIENT_ADDRESS),
        (host_netns, "npt-h0", HOST_ADDRESS),
    ):
        run(["ip", "-n", netns, "addr", "add", f"{address}/24", "dev", ifname])
        run(["ip", "-n", netns, "link", "set", ifname, "up"])


@pytest.mark.parametrize("ip_masq", [True, False], ids=["ipMasq", "no-ipMasq"])
@pytest.mark.parametrize("np_host", ["agent"], indirect=True)
def test_podman_publishes_a_port_through_the_installed_chain(
    np_host: NetplugHost, podman: Podman, cni_plugin_dirs: list[Path], containers, ip_masq: bool
) -> None:
    """``podman run -p 8080:80`` on the network ``netplugctl install`` writes: a client
    outside the host reaches the container at the host's address, port 8080."""
    conflist = install_network(np_host, podman, cni_plugin_dirs[0], ipMasq=ip_masq)
    assert [plugin["type"] for plugin in conflist["plugins"]] == ["netplug", "portmap"]
    client = containers()
    client_outside(np_host.netns, client)
    podman.run("web", "npt-ports", "sh", "-c", HTTPD, options=["-p", "8080:80"])

    def fetch() -> str:
        get = (sys.executable, "-c", GET, HOST_ADDRESS, "8080")
        return netns_exec(client, *get, check=False, timeout=10).stdout

    # Polled: httpd starts a moment after `podman run -d` returns.
    assert eventually(lambda: fetch() == "hello\n", timeout=15), fetch()
    assert "--dport 8080" in nat_rules(np_host.netns)
    podman.rm_all()
    assert "--dport 8080" not in nat_rules(np_host.netns)
    assert attachments(np_host) == []


@pytest.mark.parametrize("np_host", ["in-process"], indirect=True)
def test_podman_on_a_plain_install_resolves_names_with_no_agent_set_up(
    np_host: NetplugHost, podman: Podman, cni_plugin_dirs: list[Path]
) -> None:
    """``netplugctl install``'s conflist and nothing else: the first container's ADD
    starts netplugd (in podman's mount namespace, as the plugin runs there), which
    answers the containers' names on the gateway."""
    conflist = install_network(np_host, podman, cni_plugin_dirs[0])
    assert conflist["plugins"][0]["agent"] == {"autostart": True}
    with np_host.started_agents():
        podman.run("alpha", "npt-ports")
        podman.run("beta", "npt-ports")
        pid = np_host.started_agent_pid()
        assert pid is not None and agents_in(np_host.netns) == [pid]
        ip_b = podman.ip("beta", "npt-ports")
        for name in ("beta", "beta.npt-ports.netplug.internal"):

            def answer(name: str = name) -> str:
                return podman.exec("alpha", "nslookup", name, check=False).stdout

            assert eventually(lambda: ip_b in answer(), timeout=10), (name, answer())
        served = np_host.started_agent_log()
        assert served.count("ADD container=") == 2, served
        podman.rm_all()  # DELs through the agent
        assert attachments(np_host) == []


@pytest.mark.parametrize("np_host", ["agent", "in-process"], indirect=True)
def test_podman_network_reload_keeps_a_static_address(np_host: NetplugHost, podman: Podman) -> None:
    """``podman network reload`` (after a firewall reload) DELs and ADDs every running
    container again, listing a container's ``--ip`` twice in runtimeConfig.ips: the
    container keeps its address and its network. Both calls once failed with code 7
    ("expected at most one IPv4 address"), and reload with them."""
    podman.write_network(
        {
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [plugin_conf(np_host, capabilities={"aliases": True, "ips": True})],
        }
    )
    podman.run("alpha", NETWORK, options=["--ip", "10.244.77.7"])
    podman.run("beta", NETWORK)
    podman.podman("network", "reload", "--all")
    assert podman.ip("alpha", NETWORK) == "10.244.77.7"
    podman.exec("beta", *PING, "10.244.77.7")
    assert "10.244.77.7/24" in {r["ips"][0]["address"] for r in attachments(np_host)}
    podman.rm_all()
    assert attachments(np_host) == []


@pytest.mark.parametrize("np_host", ["agent", "in-process"], indirect=True)
def test_podman_restart_keeps_the_address_and_its_neighbours_reach_it(
    np_host: NetplugHost, podman: Podman
) -> None:
    """``podman restart`` (DEL, then ADD of the same container ID) gives the container
    its address back, and a container that talked to it reaches it at once (its
    neighbour cache's MAC is still right: once it took 15-45 s)."""
    run_alpha_and_beta(podman, np_host)
    ip_a = podman.ip("alpha", NETWORK)
    podman.exec("beta", *PING, ip_a)
    podman.podman("restart", "--time", "0", "alpha")
    assert podman.ip("alpha", NETWORK) == ip_a
    podman.exec("beta", *PING, ip_a)
    assert len(attachments(np_host)) == 2


@pytest.mark.parametrize("np_host", ["in-process"], indirect=True)
def test_podman_mac_address_is_the_containers(np_host: NetplugHost, podman: Podman) -> None:
    """``--mac-address`` (podman sends it as CNI_ARGS MAC=) is the container's MAC,
    also after a restart; it was ignored for a random one."""
    podman.write_network(
        {"cniVersion": "1.0.0", "name": NETWORK, "plugins": [plugin_conf(np_host)]}
    )
    podman.run("alpha", NETWORK, options=["--mac-address", "02:00:00:00:00:42"])
    for _ in range(2):
        assert podman.exec("alpha", "cat", "/sys/class/net/eth0/address").stdout.strip() == (
            "02:00:00:00:00:42"
        )
        podman.podman("restart", "--time", "0", "alpha")
