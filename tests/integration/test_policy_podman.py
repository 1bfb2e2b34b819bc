"""podman (CNI backend) containers selected by ``--network-alias``: a policy applied
before the selected container runs covers it from its ADD on; real TCP, UDP and
ICMP between the containers' namespaces."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from netplug_clients import install_plugins, plugin_conf
from policy_hosts import apply
from probes import Probe, echo_servers, mismatches

from netplug_env import NetplugHost
from runtimes import Podman, require_commands, run

pytestmark = pytest.mark.netns

NETWORK = "npt-pol"
POLICY = {
    "name": "db-from-alpha",
    "network": NETWORK,
    "select": {"names": ["db"]},
    "ingress": [
        {
            "from": [{"names": ["alpha"]}],
            "ports": [{"protocol": "tcp", "port": 8080}, {"protocol": "icmp"}],
        }
    ],
}


@pytest.fixture
def cni_plugin_dirs(tmp_path: Path) -> list[Path]:
    return install_plugins(tmp_path / "cni-bin")


@pytest.fixture
def np_host(host_netns: str, tmp_path: Path) -> Iterator[NetplugHost]:
    """netplug's state and agent in the host namespace (requested before ``podman``,
    so that the agent outlives podman's containers)."""
    host = NetplugHost(host_netns, tmp_path / "host")
    with host.agent():
        yield host


@contextmanager
def named_netns(podman: Podman, names: list[str]) -> Iterator[dict[str, str]]:
    """Each container's network namespace under an ``npt-ctr-`` name (``ip netns
    attach``), so that probes run in it; the names (not the namespaces) removed after."""
    attached: dict[str, str] = {}
    try:
        for name in names:
            pid = podman.inspect(name)["State"]["Pid"]
            attached[name] = f"npt-ctr-pod-{name}"
            run(["ip", "netns", "attach", attached[name], str(pid)])
        yield attached
    finally:
        for netns in attached.values():
            run(["ip", "netns", "del", netns], check=False)


def test_podman_containers_selected_by_network_alias(np_host: NetplugHost, podman: Podman):
    require_commands("nft", packages="nftables")
    podman.write_network(
        {
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [plugin_conf(np_host, capabilities={"aliases": True})],
        }
    )
    podman.run("alpha", NETWORK)
    podman.run("gamma", NETWORK)
    apply([np_host], [POLICY])  # the network exists now: policies name known networks
    podman.run("beta", NETWORK, aliases=["db"])
    ip = {n: podman.ip(n, NETWORK) for n in ("alpha", "beta", "gamma")}
    with named_netns(podman, list(ip)) as ns, echo_servers() as start:
        for netns in ns.values():
            start(netns)
        table = [
            ("alpha", "tcp", 8080, "beta", True),
            ("alpha", "icmp", 0, "beta", True),
            ("alpha", "tcp", 8081, "beta", False),
            ("alpha", "udp", 9090, "beta", False),
            ("gamma", "tcp", 8080, "beta", False),
            ("gamma", "icmp", 0, "beta", False),
            ("beta", "udp", 9090, "gamma", True),  # beta's egress: no policy has it
            ("gamma", "tcp", 8081, "alpha", True),  # alpha: not selected
        ]
        probes = [Probe(ns[a], proto, ip[b], port, ok) for a, proto, port, b, ok in table]
        wrong = mismatches(probes)
        assert not wrong, "\n".join(wrong)
    # From podman too: busybox's ping in the containers themselves.
    assert (
        podman.exec("alpha", "ping", "-c", "1", "-W", "2", ip["beta"], check=False).returncode == 0
    )
    assert (
        podman.exec("gamma", "ping", "-c", "1", "-W", "1", ip["beta"], check=False).returncode != 0
    )
