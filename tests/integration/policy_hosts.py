"""A netplug host (namespace, store, agent) with named containers, for the policy
tests: ADD with a name and aliases, addresses remembered, ``netplugctl policy``,
and waiting until a host's table has (or no longer has) a policy."""

from __future__ import annotations

import json
import subprocess
from ipaddress import ip_interface

from netplug_env import BIN, NetplugHost
from waiting import wait_for

SUBNETS = {
    "red": ("10.61.0.0/16", "fd61::/48"),
    "green": ("10.62.0.0/16", "fd62::/48"),
    "open": ("10.63.0.0/16", "fd63::/48"),  # added with isolate=False where used
}


class Containers:
    """Containers on netplug hosts, by name: ADD through the real plugin."""

    def __init__(self, make_netns, start_servers) -> None:
        self.make_netns, self.start_servers = make_netns, start_servers
        self.made: dict[str, tuple[NetplugHost, str, str, list]] = {}

    def add(
        self,
        host: NetplugHost,
        name: str,
        network: str,
        aliases: tuple[str, ...] = (),
        netns: str | None = None,
        static: str | None = None,
        **fields,
    ) -> str:
        """ADD ``name`` (in a fresh namespace with servers, or in ``netns`` whose
        servers the caller started), optionally at the ``static`` IPv4 address;
        ``fields``: more of the network's config (``isolate=False``)."""
        if netns is None:
            netns = self.make_netns()
            self.start_servers(netns)  # listening before the interface exists
        v4, v6 = SUBNETS[network]
        conf = host.conf(name=network, subnet=v4, subnet6=v6, **fields)
        if aliases:
            conf["runtimeConfig"] = {"aliases": {network: list(aliases)}}
        args = f"NETPLUG_NAME={name}" + (f";IP={static}" if static else "")
        result = host.add(conf, name, netns, env={"CNI_ARGS": args})
        ips = [ip_interface(i["address"]).ip for i in result["ips"]]
        self.made[name] = (host, network, netns, ips)
        return netns

    def ns(self, name: str) -> str:
        return self.made[name][2]

    def ip(self, name: str, version: int = 4) -> str:
        return str(next(a for a in self.made[name][3] if a.version == version))

    def gateway(self, name: str, version: int = 4) -> str:
        """The container's default gateway: its block's gateway, where its DNS server listens."""
        netns = self.made[name][2]
        out = subprocess.run(
            ["ip", "-n", netns, "-j", f"-{version}", "route", "show", "default"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return json.loads(out)[0]["gateway"]


def ctl(host: NetplugHost, *args: str, stdin: str = "") -> str:
    """netplugctl's stdout, run in ``host``'s namespace (it asks that agent's health);
    a non-zero exit fails the test."""
    cmd = ["ip", "netns", "exec", host.netns, str(BIN / "netplugctl")]
    cmd += ["--store", host.store, "--host-name", host.host_name, *args]
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def counters(host: NetplugHost) -> str:
    cmd = ["ip", "netns", "exec", host.netns, "nft", "list", "counters", "table", "inet", "netplug"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout


def status(host: NetplugHost) -> dict:
    """``netplugctl status --json``'s row (the policy revision, the hosts behind it)."""
    (row,) = json.loads(ctl(host, "status", "--json"))
    return row


def in_force(hosts: list[NetplugHost], timeout: float) -> None:
    """Returns once every live host's agent reports the store's policy revision in
    force: a policy changed under its name keeps its counters, so their presence
    does not tell the change from the old rules."""
    assert wait_for(lambda: status(hosts[0])["hostsBehind"] == [], timeout, 0.02), (
        f"hosts behind the policy revision after {timeout} s: {status(hosts[0])['hostsBehind']}"
    )


def apply(hosts: list[NetplugHost], policies: list[dict], timeout: float = 5.0) -> None:
    """``policy apply`` on the first host; returns once every host's table has them
    and every host enforces the revision they made."""
    ctl(hosts[0], "policy", "apply", "-", stdin=json.dumps(policies))
    names = [f"pol/{p['name']}/allowed" for p in policies]
    for host in hosts:
        assert wait_for(lambda h=host: all(n in counters(h) for n in names), timeout, 0.02), (
            f"{host.host_name}: {names} not programmed within {timeout} s"
        )
    in_force(hosts, timeout)


def delete(hosts: list[NetplugHost], names: list[str], timeout: float = 5.0) -> None:
    """``policy delete`` each; returns once no host's table has them and every host
    enforces the revision that made."""
    for name in names:
        ctl(hosts[0], "policy", "delete", name)
    for host in hosts:
        assert wait_for(
            lambda h=host: not any(f"pol/{n}/allowed" in counters(h) for n in names), timeout, 0.02
        ), f"{host.host_name}: {names} still programmed after {timeout} s"
    in_force(hosts, timeout)
