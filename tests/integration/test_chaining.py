"""netplug as the first plugin of a chain with the reference portmap, bandwidth and tuning,
driven by cbcni (libcni 1.1.2) as containerd and CRI-O drive it: ADD, CHECK, DEL, DEL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from netplug_clients import addresses, attachments, install_plugins, link, nat_rules, plugin_conf

from netplug_env import NetplugHost
from runtimes import Cbcni, HarnessError, netns_exec, run

pytestmark = pytest.mark.netns

NETWORK = "npt-chain"
MTU = 1400
CAPS: dict[str, Any] = {
    "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
    "bandwidth": {
        "ingressRate": 8_000_000,
        "ingressBurst": 1_000_000,
        "egressRate": 8_000_000,
        "egressBurst": 1_000_000,
    },
}
# portmap 1.1.1's CHECK looks for its IPv4 rules in ip6tables too (containernetworking/
# plugins#819): leave portMappings out of CHECK, which makes portmap's CHECK a no-op.
CHECK_CAPS = {"bandwidth": CAPS["bandwidth"]}


@pytest.fixture
def cni_plugin_dirs(tmp_path: Path) -> list[Path]:
    return install_plugins(tmp_path / "cni-bin")


@pytest.fixture
def host(host_netns: str, tmp_path: Path, cbcni: Cbcni) -> NetplugHost:
    """netplug's state for `host_netns`, and the chain written into cbcni's conf dir."""
    host = NetplugHost(host_netns, tmp_path / "host")
    cbcni.write_network(
        {
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [
                plugin_conf(host, mtu=MTU, ipMasq=False),
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "bandwidth", "capabilities": {"bandwidth": True}},
                {
                    "type": "tuning",
                    "sysctl": {"net.core.somaxconn": "512"},
                    "dataDir": str(tmp_path / "tuning"),  # not /run/cni/tuning
                },
            ],
        }
    )
    return host


def qdiscs(netns: str) -> str:
    return netns_exec(netns, "tc", "qdisc", "show").stdout


def test_chain_add_check_del(
    cbcni: Cbcni, host: NetplugHost, host_netns: str, container_netns: str
) -> None:
    result = cbcni.add(NETWORK, container_netns, container_id="c1", cap_args=CAPS)
    assert result["cniVersion"] == "1.0.0"
    (ip,) = result["ips"]
    # netplug's bridge, host veth, eth0; then bandwidth's ifb device for egress shaping
    bridge, host_end, ctr_end, ifb = result["interfaces"]
    assert bridge["name"] == f"np-{NETWORK}" and ifb["name"].startswith("bwp")
    assert ctr_end["name"] == "eth0" and ctr_end["sandbox"] == str(
        Path("/run/netns") / container_netns
    )
    assert addresses(container_netns) == {ip["address"]}
    assert link(container_netns)["mtu"] == MTU
    assert netns_exec(container_netns, "cat", "/proc/sys/net/core/somaxconn").stdout == "512\n"
    netns_exec(container_netns, "ping", "-c", "1", "-W", "2", ip["gateway"])
    nat = nat_rules(host_netns)
    assert "--dport 8080" in nat and ip["address"].split("/")[0] in nat, nat
    assert " tbf " in qdiscs(host_netns)
    assert host_end["name"] in host.veths()
    (record,) = attachments(host)
    assert record["containerID"] == "c1"

    cbcni.check(NETWORK, container_netns, container_id="c1", cap_args=CHECK_CAPS)

    cbcni.delete(NETWORK, container_netns, container_id="c1", cap_args=CAPS)
    assert link(container_netns) is None
    assert host.veths() == set()
    assert attachments(host) == []
    assert "--dport 8080" not in nat_rules(host_netns)
    assert " tbf " not in qdiscs(host_netns)
    cbcni.delete(NETWORK, container_netns, container_id="c1", cap_args=CAPS)  # idempotent
    assert host.veths() == set()
    assert attachments(host) == []
    assert "--dport 8080" not in nat_rules(host_netns)


def test_chain_check_fails_when_the_address_is_gone(
    cbcni: Cbcni, host: NetplugHost, host_netns: str, container_netns: str
) -> None:
    cbcni.add(NETWORK, container_netns, container_id="c1", cap_args=CAPS)
    cbcni.check(NETWORK, container_netns, container_id="c1", cap_args=CHECK_CAPS)
    run(["ip", "-n", container_netns, "addr", "flush", "dev", "eth0"])

    with pytest.raises(HarnessError, match="missing") as failed:
        cbcni.check(NETWORK, container_netns, container_id="c1", cap_args=CHECK_CAPS)
    assert "netplug" in str(failed.value)
    # libcni's message drops the code; the plugin's log line keeps it
    last = host.log_file.read_text().splitlines()[-1]
    assert "CHECK container=c1 ifname=eth0" in last and "error 103" in last, last

    cbcni.delete(NETWORK, container_netns, container_id="c1", cap_args=CAPS)
    assert host.veths() == set()
    assert attachments(host) == []
    assert "--dport 8080" not in nat_rules(host_netns)


def test_chain_result_is_cached_by_libcni(
    cbcni: Cbcni, host: NetplugHost, container_netns: str
) -> None:
    """libcni caches the chain's final result; netplug's part of it survives the chain."""
    result = cbcni.add(NETWORK, container_netns, container_id="c1", cap_args=CAPS)
    (cached,) = (cbcni.cache_dir / "results").iterdir()
    assert json.loads(cached.read_text())["result"]["ips"] == result["ips"]
    cbcni.delete(NETWORK, container_netns, container_id="c1", cap_args=CAPS)
    assert list((cbcni.cache_dir / "results").iterdir()) == []
