"""podman 4.3 (CNI backend) runs containers on a netplug network, with and without netplugd.

Built on the harness that test_reference_harness.py proves (RUNTIMES.md): podman runs in
the test's host namespace, netplug's launchers come first in its plugin dirs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from netplug_clients import agent_in_mount_ns, attachments, install_plugins, plugin_conf, veths

from netplug_env import NetplugHost, eventually
from runtimes import Podman

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
