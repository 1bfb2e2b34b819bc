"""The policy plan's nftables text, loaded for real: in a namespace the test made.

Each scenario loads ``render(desired(...))`` with ``nft -f``, applies a ``delta``
and reads the sets back (``nft -j``); the smoke test builds two netplug networks
with the real plugin and shows isolation on ping and TCP, both ways, v4 and v6,
with the ruleset loaded by hand (in place of the one ADD programs: the agent's
own enforcement is tests/integration/test_enforced_traffic.py's).
"""

from __future__ import annotations

import json
import subprocess
from ipaddress import ip_address, ip_interface, ip_network

import pytest
from policy_examples import DESIGN_EXAMPLE

from netplug.policy.model import parse
from netplug.policy.plan import (
    Dataplane,
    Endpoint,
    NetworkInfo,
    add_elements,
    compile_plan,
    delete_elements,
    delta,
    desired,
    from_listing,
    render,
)

from netplug_env import eventually, ping
from runtimes import make_netns, require_commands, require_root, run
from traffic import blocked, reaches

pytestmark = pytest.mark.netns

BLUE = NetworkInfo("blue", (ip_network("10.1.0.0/16"), ip_network("fd01::/48")))
GREEN = NetworkInfo("green", (ip_network("10.2.0.0/16"), ip_network("fd02::/48")))
OPEN = NetworkInfo("open", (ip_network("10.3.0.0/16"),), isolate=False)


def ep(network: str, host: str, *addresses: str, names=()) -> Endpoint:
    return Endpoint(network, host, tuple(map(ip_address, addresses)), frozenset(names))


ENDPOINTS = [
    ep("blue", "h1", "10.1.0.2", "fd01::2", names=["db"]),
    ep("blue", "h1", "10.1.0.3", "fd01::3", names=["web"]),
    ep("blue", "h2", "10.1.1.2", names=["web-2"]),
    ep("green", "h1", "10.2.0.2", "fd02::2", names=["api"]),
    ep("open", "h2", "10.3.1.2", names=["tool"]),
]
NEW = ep("blue", "h1", "10.1.0.9", "fd01::9", names=["db-9"])

EVERY_FORM = [
    DESIGN_EXAMPLE,
    {"name": "lockdown", "network": "green", "select": {}, "ingress": [], "egress": []},
    {
        "name": "out",
        "network": "blue",
        "select": {"names": ["web*"]},
        "egress": [
            {"to": [{"network": "green"}, {"cidr": "2001:db8::/32"}, {"cidr": "198.51.100.0/24"}]},
            {
                "to": [{"names": ["db*"]}],
                "ports": [{"protocol": "udp", "port": 5000, "endPort": 5100}],
            },
            {"ports": [{"protocol": "icmp"}, {"protocol": "sctp"}, {"port": 443}]},
        ],
    },
    {"name": "open-all", "network": "open", "select": {}, "ingress": [{}]},
]
MANY = [
    {
        "name": f"p{i}",
        "network": "blue" if i % 2 else "green",
        "select": {"names": [f"svc-{i}*"]},
        "ingress": [{"from": [{"names": [f"client-{i}-?"]}], "ports": [{"port": 1000 + i}]}],
    }
    for i in range(60)
]

SCENARIOS = {
    "isolation only": [],
    "design example": [DESIGN_EXAMPLE],
    "every form": EVERY_FORM,
    "sixty policies": MANY,
}


def drop_table(netns: str) -> None:
    run(["ip", "netns", "exec", netns, "nft", "delete", "table", "inet", "netplug"])


def nft(netns: str, script: str) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, f"nft refused the batch: {done.stderr}\n{script}"


def programmed(netns: str) -> Dataplane:
    out = run(["ip", "netns", "exec", netns, "nft", "-j", "list", "table", "inet", "netplug"])
    return from_listing(json.loads(out.stdout))


def same_objects(have: Dataplane, want: Dataplane) -> bool:
    """Sets, counters, chains, elements and the rules' generation (read back from
    the fast-path rule's comment) as planned (rules are not read back)."""
    return (have.sets, have.counters, have.members, have.chains.keys()) == (
        want.sets,
        want.counters,
        want.members,
        want.chains.keys(),
    ) and (have.generation, have.digest) == (want.generation, want.digest) != (0, "")


def counter(netns: str, name: str) -> int:
    cmd = ["ip", "netns", "exec", netns, "nft", "-j", "list", "counter", "inet", "netplug", name]
    listed = json.loads(run(cmd).stdout)["nftables"]
    return next(i["counter"] for i in listed if "counter" in i)["packets"]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_generated_rulesets_load_and_deltas_apply(scenario):
    require_root()
    require_commands("nft", packages="nftables")
    docs = SCENARIOS[scenario]
    policies = parse(json.dumps(docs), {"blue", "green", "open"}) if docs else ()
    networks = [BLUE, GREEN, OPEN]
    first = desired(policies, networks, ENDPOINTS, "h1")
    grown = desired(policies, networks, [*ENDPOINTS, NEW], "h1")
    shrunk = desired(policies, networks, ENDPOINTS[1:], "h1")
    with make_netns("npt-nft-") as netns:
        nft(netns, render(first))
        assert same_objects(programmed(netns), first)
        nft(netns, render(first))  # replacing an existing table is the same batch
        assert same_objects(programmed(netns), first)
        for before, after in ((first, grown), (grown, shrunk), (shrunk, first)):
            step = delta(before, after)
            assert "chain" not in step and "rule" not in step  # elements only
            if step:
                nft(netns, step)
            assert same_objects(programmed(netns), after)
        # One container's share, as the agent adds it on ADD and removes it on DEL.
        share = compile_plan(policies, networks).elements(NEW, "h1")
        nft(netns, add_elements(share))
        assert same_objects(programmed(netns), grown)
        nft(netns, delete_elements(share))
        assert same_objects(programmed(netns), first)
        # An agent that starts over reads what is there and rewrites the rules in
        # place (mark and sweep): the same objects as a fresh load.
        nft(netns, delta(programmed(netns), grown))
        assert same_objects(programmed(netns), grown)
        tables = run(["ip", "netns", "exec", netns, "nft", "-j", "list", "tables"]).stdout
        assert [t["table"]["name"] for t in json.loads(tables)["nftables"] if "table" in t] == [
            "netplug"
        ]


def test_a_policy_change_sweeps_what_is_gone_and_adds_what_is_new():
    require_root()
    require_commands("nft", packages="nftables")
    every = parse(json.dumps(EVERY_FORM), {"blue", "green", "open"})
    before = desired(every, [BLUE, GREEN, OPEN], ENDPOINTS, "h1")
    few = parse(json.dumps(MANY[:3]), {"blue", "green"})
    after = desired(few, [BLUE, GREEN], [e for e in ENDPOINTS if e.network != "open"], "h1")
    with make_netns("npt-nft-") as netns:
        nft(netns, render(before))
        nft(netns, delta(before, after))
        assert same_objects(programmed(netns), after)
        assert after.generation != before.generation  # every connection judged again
        nft(netns, delta(after, before))
        assert same_objects(programmed(netns), before)


# -- real traffic ----------------------------------------------------------------------


def test_isolation_and_a_policy_on_real_traffic(plain_host, containers, servers):
    require_commands("nft", packages="nftables")
    host = plain_host
    nets = {
        "red": host.conf(name="red", subnet="10.41.0.0/16", subnet6="fd41::/48"),
        "green": host.conf(name="green", subnet="10.42.0.0/16", subnet6="fd42::/48"),
    }
    made = {}  # container -> (network, namespace, [addresses], gateway v4)
    for name, network in (("red1", "red"), ("red2", "red"), ("green1", "green")):
        netns = containers()
        result = host.add(nets[network], name, netns)
        ips = [ip_interface(i["address"]).ip for i in result["ips"]]
        made[name] = (network, netns, ips, result["ips"][0]["gateway"])
        servers(netns)
    links = host.links()
    for network in nets:  # ADD lets the bridge's own traffic reach the forward hook
        bridge = links[f"np-{network}"]["linkinfo"]["info_data"]
        assert bridge["nf_call_iptables"] == 1 and bridge["nf_call_ip6tables"] == 1
    drop_table(host.netns)  # ADD programmed it: these scenarios load their own

    def address(name: str, version: int) -> str:
        return str(next(a for a in made[name][2] if a.version == version))

    def endpoints() -> list[Endpoint]:
        return [
            Endpoint(n, "node-1", tuple(ips), frozenset({c})) for c, (n, _, ips, _) in made.items()
        ]

    def plan(isolate_green: bool = True, policies=()) -> Dataplane:
        info = [
            NetworkInfo("red", (ip_network("10.41.0.0/16"), ip_network("fd41::/48"))),
            NetworkInfo(
                "green", (ip_network("10.42.0.0/16"), ip_network("fd42::/48")), isolate_green
            ),
        ]
        return desired(policies, info, endpoints(), "node-1")

    def load(isolate_green: bool = True, policies=()) -> None:
        nft(host.netns, render(plan(isolate_green, policies)))

    red1, red2, green1 = (made[c][1] for c in ("red1", "red2", "green1"))
    # Without the table, the networks reach each other (the starting point).
    for version in (4, 6):
        assert eventually(lambda v=version: reaches(red1, address("green1", v)))
        assert eventually(lambda v=version: reaches(red1, address("red2", v)))

    load()
    for version in (4, 6):
        assert blocked(red1, address("green1", version))
        assert blocked(green1, address("red1", version))
        assert reaches(red1, address("red2", version))  # its own network (bridged)
    assert ping(red1, made["red1"][3])  # its gateway: the host

    load(isolate_green=False)  # one side opting out opens the pair (netavark's isolate)
    for version in (4, 6):
        assert reaches(red1, address("green1", version))
        assert reaches(green1, address("red1", version))

    # A policy on the bridged path: red2 accepts nothing new, but its replies pass.
    deny = parse(
        json.dumps(
            {"name": "deny", "network": "red", "select": {"names": ["red2"]}, "ingress": []}
        ),
        {"red", "green"},
    )
    load(policies=deny)
    for version in (4, 6):
        assert blocked(red1, address("red2", version))
        assert reaches(red2, address("red1", version))
    dropped = counter(host.netns, "pol/deny/dropped")
    assert dropped > 0
    # Another policy joins: the rules are rewritten in place, deny's count goes on.
    more = {"name": "more", "network": "green", "select": {}, "ingress": [{}]}
    both = deny + parse(json.dumps(more), {"red", "green"})
    nft(host.netns, delta(plan(policies=deny), plan(policies=both)))
    assert counter(host.netns, "pol/deny/dropped") == dropped
    assert blocked(red1, address("red2", 4))
    assert counter(host.netns, "pol/deny/dropped") > dropped


def test_isolation_across_hosts_holds_on_either_host_alone(lab, lab_hosts, containers):
    """Over the routed VXLAN overlay: red on host1 to green on host2 and back, v4 and
    v6. Each host's table drops it alone, as the sending or as the receiving host."""
    require_commands("nft", packages="nftables")
    hosts = lab_hosts(2)
    subnets = {"red": ("10.71.0.0/16", "fd71::/48"), "green": ("10.72.0.0/16", "fd72::/48")}
    made = {}  # container -> (namespace, [addresses])
    # Each host holds both networks, so each routes to the other's blocks of both.
    for name, network, host in (
        ("r1", "red", "host1"),
        ("g1", "green", "host1"),
        ("r2", "red", "host2"),
        ("g2", "green", "host2"),
    ):
        v4, v6 = subnets[network]
        conf = hosts[host].conf(name=network, subnet=v4, subnet6=v6)
        netns = containers()
        result = hosts[host].add(conf, name, netns)
        made[name] = (netns, [ip_interface(i["address"]).ip for i in result["ips"]])

    def address(name: str, version: int) -> str:
        return str(next(a for a in made[name][1] if a.version == version))

    # Once the agents have the overlay complete (each network across hosts, which
    # isolation allows), they stop: the table is this scenario's to load.
    for src, dst in (("r1", "r2"), ("r2", "r1"), ("g1", "g2"), ("g2", "g1")):
        for version in (4, 6):
            assert eventually(lambda s=src, d=dst, v=version: ping(made[s][0], address(d, v)))
    for host in hosts.values():
        lab.stop_agent(host.host_name)
        drop_table(host.netns)

    def table(host: str, isolate: bool = True) -> str:
        info = [NetworkInfo(n, tuple(map(ip_network, s)), isolate) for n, s in subnets.items()]
        return render(desired((), info, [], host))

    r1, g2 = made["r1"][0], made["g2"][0]
    for version in (4, 6):  # the overlay carries both networks both ways
        assert eventually(lambda v=version: ping(r1, address("g2", v)))
        assert eventually(lambda v=version: ping(g2, address("r1", v)))
        assert eventually(lambda v=version: ping(r1, address("r2", v)))
    for enforcing, idle in (("host2", "host1"), ("host1", "host2")):
        nft(hosts[enforcing].netns, table(enforcing))
        run(
            ["ip", "netns", "exec", hosts[idle].netns, "nft", "delete", "table", "inet", "netplug"],
            check=False,
        )
        for version in (4, 6):
            assert not ping(r1, address("g2", version)), f"{enforcing} alone, v{version}"
            assert not ping(g2, address("r1", version)), f"{enforcing} alone, v{version}"
            assert ping(r1, address("r2", version))  # its own network, across hosts
    for host in hosts:
        nft(hosts[host].netns, table(host, isolate=False))
    for version in (4, 6):
        assert ping(r1, address("g2", version)) and ping(g2, address("r1", version))
