"""The runtime harness, proven with Debian's reference CNI plugins (no netplug code).

Templates for netplug's runtime tests: swap the `bridge` + `host-local` plugin for netplug's
and put its bin dir first by overriding the `cni_plugin_dirs` fixture.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runtimes import Cbcni, Podman, netns_exec

pytestmark = pytest.mark.netns

PING = ("ping", "-c", "2", "-W", "2")


def bridge(ipam_dir: Path, *subnets: str) -> dict[str, Any]:
    """Reference `bridge` + `host-local`, leases kept in `ipam_dir` (not /var/lib/cni)."""
    return {
        "type": "bridge",
        "bridge": "nptbr0",
        "isGateway": True,
        "ipMasq": False,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": s}] for s in subnets],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": str(ipam_dir),
        },
    }


def test_podman_containers_ping_each_other(podman: Podman) -> None:
    podman.write_network(
        {
            "cniVersion": "1.0.0",
            "name": "npt-ref",
            "plugins": [bridge(podman.dir / "ipam", "10.88.7.0/24")],
        }
    )
    podman.run("a", "npt-ref")
    podman.run("b", "npt-ref", aliases=["web"])

    podman.exec("a", *PING, podman.ip("b", "npt-ref"))
    podman.exec("b", *PING, podman.ip("a", "npt-ref"))

    podman.rm_all()  # CNI DEL for both: the libcni cache empties
    assert list((podman.cni_cache_dir / "results").iterdir()) == []


def test_cbcni_chain_add_check_del(
    cbcni: Cbcni, host_netns: str, container_netns: str, tmp_path: Path
) -> None:
    cbcni.write_network(
        {
            "cniVersion": "1.0.0",
            "name": "npt-chain",
            "plugins": [
                bridge(tmp_path / "ipam", "10.88.9.0/24"),
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "bandwidth", "capabilities": {"bandwidth": True}},
                {
                    "type": "tuning",
                    "mtu": 1400,
                    "sysctl": {"net.core.somaxconn": "512"},
                    "dataDir": str(tmp_path / "tuning"),  # not /run/cni/tuning
                },
            ],
        }
    )
    caps = {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {
            "ingressRate": 8_000_000,
            "ingressBurst": 1_000_000,
            "egressRate": 8_000_000,
            "egressBurst": 1_000_000,
        },
    }

    result = cbcni.add("npt-chain", container_netns, cap_args=caps)
    assert result["cniVersion"] == "1.0.0"
    addr = result["ips"][0]["address"]
    eth0 = json.loads(netns_exec(container_netns, "ip", "-j", "addr", "show", "eth0").stdout)[0]
    assert eth0["mtu"] == 1400
    assert addr in {f"{a['local']}/{a['prefixlen']}" for a in eth0["addr_info"]}
    assert netns_exec(container_netns, "cat", "/proc/sys/net/core/somaxconn").stdout == "512\n"
    netns_exec(container_netns, *PING, result["ips"][0]["gateway"])
    assert "--dport 8080" in netns_exec(host_netns, "iptables", "-t", "nat", "-S").stdout
    assert " tbf " in netns_exec(host_netns, "tc", "qdisc", "show").stdout

    # portmap 1.1.1's CHECK wants its IPv4 rules in ip6tables too (containernetworking/
    # plugins#819): leave portMappings out of CHECK, which makes portmap's CHECK a no-op.
    cbcni.check("npt-chain", container_netns, cap_args={"bandwidth": caps["bandwidth"]})
    cbcni.delete("npt-chain", container_netns, cap_args=caps)

    assert netns_exec(container_netns, "ip", "link", "show", "eth0", check=False).returncode
    assert "--dport 8080" not in netns_exec(host_netns, "iptables", "-t", "nat", "-S").stdout
    assert " tbf " not in netns_exec(host_netns, "tc", "qdisc", "show").stdout
    cbcni.delete("npt-chain", container_netns, cap_args=caps)  # DEL is idempotent
