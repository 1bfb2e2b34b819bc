"""Shared bits for the tests that drive netplug through real CNI clients (podman, cbcni).

``install_plugins`` makes a CNI plugin dir holding only netplug's two plugins (launchers
written by ``netplugctl install``); ``plugin_conf`` turns ``NetplugHost.conf()`` into a
conflist entry (libcni injects ``name`` and ``cniVersion`` itself).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netplug_env import BIN, NetplugHost
from runtimes import REFERENCE_PLUGIN_DIR, netns_exec, netns_path, run


def install_plugins(bin_dir: Path) -> list[Path]:
    """``netplugctl install --no-conflist`` into `bin_dir`; the CNI path to use with it."""
    run([BIN / "netplugctl", "install", "--bin-dir", bin_dir, "--no-conflist"])
    assert sorted(p.name for p in bin_dir.iterdir()) == ["netplug", "netplug-ipam"]
    return [bin_dir, REFERENCE_PLUGIN_DIR]


def plugin_conf(host: NetplugHost, **fields: Any) -> dict[str, Any]:
    """netplug's entry in a conflist: `host.conf()` without name and cniVersion."""
    conf = host.conf(**fields)
    del conf["name"], conf["cniVersion"]
    return conf


def attachments(host: NetplugHost) -> list[dict[str, Any]]:
    """The attachment records in `host`'s SQLite store."""
    return list(host.records("/netplug/attachments/").values())


def link(netns: str, ifname: str = "eth0") -> dict[str, Any] | None:
    """``ip -j addr show`` of `ifname` in `netns`; None when it does not exist."""
    done = run(["ip", "-n", netns, "-j", "addr", "show", "dev", ifname], check=False)
    return json.loads(done.stdout)[0] if done.returncode == 0 else None


def addresses(netns: str, ifname: str = "eth0") -> set[str]:
    """The global addresses (CIDR) on `ifname` in `netns`."""
    info = link(netns, ifname) or {"addr_info": []}
    return {
        f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"] if a.get("scope") == "global"
    }


def nat_rules(netns: str) -> str:
    return netns_exec(netns, "iptables", "-t", "nat", "-S").stdout


def veths(netns: str) -> set[str]:
    out = run(["ip", "-n", netns, "-j", "-d", "link", "show", "type", "veth"]).stdout
    return {item["ifname"] for item in json.loads(out or "[]")}


def agent_in_mount_ns(host: NetplugHost, mount_ns: Path):
    """netplugd in `host`'s netns like ``NetplugHost.agent()``, but inside the mount
    namespace `mount_ns` (a podman's ``dir/"mnt"``) instead of ``ip netns exec``'s fresh
    one, so the container netns paths podman hands the plugin exist for the agent too."""
    return host.agent(["nsenter", f"--mount={mount_ns}", f"--net={netns_path(host.netns)}"])
