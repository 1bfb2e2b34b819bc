"""Every policy form on real traffic, on one host with its agent: TCP, UDP and ICMP,
IPv4 and IPv6; and policies applied, changed and deleted under open connections.

The host and its containers are built once for the module; each case applies its
policies, checks a table of probes (all run at once: ``probes.mismatches``) and
deletes them again. Containers: red (isolated) web (alias frontend), db-1, db-2,
other; green api, g1; and "outside", a namespace routed through the host that no
netplug network holds (for ``cidr`` peers).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from policy_hosts import Containers, apply, ctl, delete
from probes import (
    CONVERSATIONS,
    FLOW_WAIT,
    Probe,
    echo_servers,
    exchanges,
    flows,
    mismatches,
    netns_python,
)

from netplug_env import NetplugHost
from runtimes import make_netns, require_commands, require_root, run
from waiting import wait_for

pytestmark = pytest.mark.netns

OUTSIDE = {4: ("198.51.100.1", "198.51.100.2", "198.51.100.0/24"),
           6: ("2001:db8:51::1", "2001:db8:51::2", "2001:db8:51::/64")}  # fmt: skip
DEFAULT_PORT = {"tcp": 8080, "udp": 9090, "icmp": 0, "dns": 53}


class Site:
    def __init__(self, host: NetplugHost, containers: Containers, outside: str) -> None:
        self.host, self.c, self.outside = host, containers, outside

    def ns(self, name: str) -> str:
        return self.outside if name == "outside" else self.c.ns(name)

    def ip(self, name: str, version: int) -> str:
        return OUTSIDE[version][1] if name == "outside" else self.c.ip(name, version)

    def probes(self, table: str) -> list[Probe]:
        """Probes from lines "CLIENT PROTOCOL[:PORT] TARGET +|-" (TARGET "gw": the
        client's gateway), each in IPv4 and IPv6."""
        found = []
        for line in table.strip().splitlines():
            client, what, target, sign = line.split()
            protocol, _, port = what.partition(":")
            for v in (4, 6):
                address = self.c.gateway(client, v) if target == "gw" else self.ip(target, v)
                number = int(port) if port else DEFAULT_PORT[protocol]
                found.append(Probe(self.ns(client), protocol, address, number, sign == "+"))
        return found


def connect_outside(host_ns: str, outside: str) -> None:
    """A veth from the host to ``outside``, routed both ways (no netplug network)."""
    run(["ip", "-n", host_ns, "link", "add", "out0", "type", "veth", "peer", "name", "eth0",
         "netns", outside])  # fmt: skip
    for v, (near, far, _) in OUTSIDE.items():
        prefix = 24 if v == 4 else 64
        run(["ip", "-n", host_ns, "addr", "add", f"{near}/{prefix}", "dev", "out0", "nodad"])
        run(["ip", "-n", outside, "addr", "add", f"{far}/{prefix}", "dev", "eth0", "nodad"])
    for ns, dev in ((host_ns, "out0"), (outside, "eth0")):
        run(["ip", "-n", ns, "link", "set", dev, "up"])
    for subnet in ("10.61.0.0/16", "10.62.0.0/16"):
        run(["ip", "-n", outside, "route", "add", subnet, "via", OUTSIDE[4][0]])
    for subnet in ("fd61::/48", "fd62::/48"):
        run(["ip", "-n", outside, "-6", "route", "add", subnet, "via", OUTSIDE[6][0]])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_root()
    require_commands("nft", packages="nftables")
    with ExitStack() as stack:
        host_ns = stack.enter_context(make_netns("npt-host-"))
        host = NetplugHost(host_ns, tmp_path_factory.mktemp("policy-traffic"))
        start = stack.enter_context(echo_servers())
        stack.enter_context(host.agent())
        c = Containers(lambda: stack.enter_context(make_netns("npt-ctr-")), start)
        c.add(host, "web", "red", aliases=("frontend",))
        for name in ("db-1", "db-2", "other"):
            c.add(host, name, "red")
        for name in ("api", "g1"):
            c.add(host, name, "green")
        outside = stack.enter_context(make_netns("npt-ctr-"))
        start(outside)
        connect_outside(host_ns, outside)
        yield Site(host, c, outside)


def ingress(select, rules, name="p"):
    return {"name": name, "network": "red", "select": select, "ingress": rules}


def tcp(port: int) -> dict:
    return {"protocol": "tcp", "port": port}


def udp(port: int) -> dict:
    return {"protocol": "udp", "port": port}


DB1 = {"names": ["db-1"]}
# (id, policies (given the site: some name addresses), probes)
CASES: list[tuple[str, Callable[[Site], list[dict]], str]] = [
    (
        "isolation",  # no policy: red and green are segments, for every protocol
        lambda s: [],
        """
        web tcp db-1 +
        web udp db-1 +
        web icmp db-1 +
        g1 udp api +
        web tcp api -
        web udp api -
        web icmp api -
        api tcp web -
        api udp:9091 web -
        api icmp web -
        g1 udp db-2 -
        web dns gw +
        """,
    ),
    (
        "names-and-ports",
        lambda s: [ingress(DB1, [{"from": [{"names": ["web"]}], "ports": [tcp(8080), udp(9090)]}])],
        """
        web tcp:8080 db-1 +
        web tcp:8081 db-1 -
        web udp:9090 db-1 +
        web udp:9091 db-1 -
        web icmp db-1 -
        other tcp db-1 -
        other udp db-1 -
        web tcp:8081 db-2 +
        other udp:9091 db-2 +
        db-1 tcp other +
        db-1 udp other +
        db-1 dns gw +
        """,
    ),
    (
        "aliases-and-globs",  # select by glob (matched case-insensitively), from an alias
        lambda s: [ingress({"names": ["DB-*"]}, [{"from": [{"names": ["front*"]}]}])],
        """
        web tcp db-1 +
        web udp:9091 db-2 +
        web icmp db-2 +
        other tcp db-1 -
        other udp db-2 -
        db-1 tcp db-2 -
        db-2 tcp web +
        db-2 udp other +
        """,
    ),
    (
        "select-all-accepts-nothing-new",  # {} and "ingress": []; egress untouched
        lambda s: [ingress({}, [])],
        """
        web tcp db-1 -
        db-1 udp web -
        other icmp db-2 -
        web dns gw +
        db-1 tcp outside +
        db-1 udp outside +
        outside tcp db-1 -
        api tcp g1 +
        g1 udp api +
        """,
    ),
    (
        "egress-to-names-and-cidr",
        lambda s: [
            {
                "name": "p",
                "network": "red",
                "select": {"names": ["web"]},
                "egress": [
                    {"to": [{"names": ["db-1"]}], "ports": [{"protocol": "udp"}]},
                    {
                        "to": [{"cidr": OUTSIDE[4][2]}, {"cidr": OUTSIDE[6][2]}],
                        "ports": [tcp(8080)],
                    },
                ],
            }
        ],
        """
        web udp:9090 db-1 +
        web udp:9091 db-1 +
        web tcp db-1 -
        web icmp db-1 -
        web udp db-2 -
        web tcp:8080 outside +
        web tcp:8081 outside -
        web udp outside -
        web dns gw +
        other tcp web +
        db-2 udp web +
        """,
    ),
    (
        "egress-empty-opens-nothing",
        lambda s: [{"name": "p", "network": "red", "select": {"names": ["web"]}, "egress": []}],
        """
        web tcp db-1 -
        web udp db-1 -
        web icmp db-1 -
        web tcp outside -
        web dns gw +
        db-1 tcp web +
        other udp web +
        """,
    ),
    (
        "egress-and-ingress-both-judge",  # web may open db-1 and db-2; db-1 accepts other
        lambda s: [
            {
                "name": "out",
                "network": "red",
                "select": {"names": ["web"]},
                "egress": [{"to": [{"names": ["db-?"]}], "ports": [tcp(8080)]}],
            },
            ingress(DB1, [{"from": [{"names": ["other"]}]}], name="in"),
        ],
        """
        web tcp db-2 +
        web tcp db-1 -
        other tcp db-1 +
        web udp db-2 -
        db-1 tcp web +
        """,
    ),
    (
        "another-network-by-names",  # a hole in the isolation for api only, on one port
        lambda s: [
            ingress(
                DB1,
                [
                    {"from": [{"network": "green", "names": ["api"]}], "ports": [tcp(8080)]},
                    {"from": [{"names": ["web"]}]},
                ],
            )
        ],
        """
        api tcp:8080 db-1 +
        api tcp:8081 db-1 -
        api udp db-1 -
        g1 tcp db-1 -
        api tcp db-2 -
        db-1 tcp api -
        web icmp db-1 +
        other tcp db-1 -
        """,
    ),
    (
        "another-network-whole",
        lambda s: [ingress({"names": ["db-2"]}, [{"from": [{"network": "green"}]}])],
        """
        g1 udp db-2 +
        api icmp db-2 +
        api tcp db-2 +
        g1 tcp db-1 -
        web tcp db-2 -
        db-2 tcp g1 -
        """,
    ),
    (
        "cidr",  # an outside range, and one container's own addresses as /32 and /128
        lambda s: [
            ingress(
                DB1,
                [
                    {
                        "from": [
                            {"cidr": OUTSIDE[4][2]},
                            {"cidr": OUTSIDE[6][2]},
                            {"cidr": f"{s.ip('other', 4)}/32"},
                            {"cidr": f"{s.ip('other', 6)}/128"},
                        ]
                    }
                ],
            )
        ],
        """
        outside tcp db-1 +
        outside udp db-1 +
        other udp:9091 db-1 +
        web tcp db-1 -
        web udp db-1 -
        outside tcp db-2 +
        """,
    ),
    (
        "protocols-and-ranges",  # from anyone of red; still isolated from green
        lambda s: [
            ingress(
                DB1,
                [
                    {
                        "ports": [
                            {"protocol": "icmp"},
                            udp(9091),
                            {"protocol": "tcp", "port": 8080, "endPort": 8081},
                        ]
                    }
                ],
            ),
            ingress({"names": ["db-2"]}, [{"ports": [{"protocol": "sctp"}]}], name="sctp-only"),
        ],
        """
        web icmp db-1 +
        other icmp db-1 +
        web udp:9091 db-1 +
        web udp:9090 db-1 -
        web tcp:8080 db-1 +
        other tcp:8081 db-1 +
        api tcp db-1 -
        api icmp db-1 -
        web tcp db-2 -
        web udp db-2 -
        web icmp db-2 -
        """,
    ),
    (
        "policies-add-up",
        lambda s: [
            ingress(DB1, [{"from": [{"names": ["web"]}], "ports": [tcp(8080)]}], name="a"),
            ingress(DB1, [{"from": [{"names": ["other"]}], "ports": [udp(9090)]}], name="b"),
        ],
        """
        web tcp db-1 +
        web udp db-1 -
        other udp db-1 +
        other tcp db-1 -
        """,
    ),
]


@pytest.mark.parametrize(("policies", "table"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_policy_forms_on_real_traffic(site: Site, policies, table: str) -> None:
    docs = policies(site)
    if docs:
        apply([site.host], docs)
    try:
        wrong = mismatches(site.probes(table))
        assert not wrong, "\n".join(wrong)
    finally:
        if docs:
            delete([site.host], [d["name"] for d in docs])


def test_open_connections_follow_policy_changes(site: Site, tmp_path) -> None:
    """A TCP connection and a UDP flow from web (allowed, then UDP only) and from
    other (never allowed) to db-1, v4 and v6, open across apply, change and delete:
    each keeps going exactly while the policy in force allows it."""
    c = site.c
    pairs = [(c.ns(src), c.ip("db-1", v)) for src in ("web", "other") for v in (4, 6)]
    web_logs, other_logs = slice(0, 2), slice(2, 4)
    settle = FLOW_WAIT + 0.05  # an exchange in flight when the table changed

    def window(logs, protocol: str, since: float) -> list[bool]:
        return [ok for log in logs for ok in exchanges(log, protocol, since + settle, 1e12)]

    def phase(docs: list[dict] | None, expect: dict[tuple[str, str], bool]) -> None:
        if docs:
            apply([site.host], docs)
        elif docs is not None:
            delete([site.host], ["p"])
        since = time.monotonic()
        time.sleep(settle + 1.5)
        for (who, protocol), allowed in expect.items():
            seen = window(logs[web_logs if who == "web" else other_logs], protocol, since)
            assert len(seen) >= 2, f"{who} {protocol}: too few exchanges {seen}"
            want = [allowed] * len(seen)
            assert seen == want, f"{docs}: {who} {protocol} answered {seen}"

    web_from = [{"from": [{"names": ["web"]}]}]
    with flows(pairs, tmp_path) as logs:
        everything = {(w, p): True for w in ("web", "other") for p in ("tcp", "udp")}
        phase(None, everything)
        web_only = [{**web_from[0], "ports": [tcp(8080), udp(9090)]}]
        phase(
            [ingress(DB1, web_only)],
            {("web", "tcp"): True, ("web", "udp"): True, ("other", "tcp"): False,
             ("other", "udp"): False},
        )  # fmt: skip
        udp_only = [{**web_from[0], "ports": [udp(9090)]}]
        phase(
            [ingress(DB1, udp_only)],
            {("web", "tcp"): False, ("web", "udp"): True, ("other", "udp"): False},
        )
        phase([], {("web", "udp"): True, ("other", "udp"): True})
        # TCP resumes with its next retransmission (backoff: within seconds).
        since = time.monotonic()
        deadline = since + 8
        while time.monotonic() < deadline and not all(
            any(exchanges(log, "tcp", since, 1e12)[-1:]) for log in logs
        ):
            time.sleep(0.1)
        assert all(exchanges(log, "tcp", since, 1e12)[-1] for log in logs), "TCP did not resume"


# CONVERSATIONS idle between exchanges: one on each per stdin line, printed
# "tcp:OK udp:OK" (OK 0 or 1).
IDLE = (
    CONVERSATIONS
    + """\
def exchange(s, token):
    s.send(token)
    while select.select([s], [], [], wait)[0]:
        if token in s.recv(65536):
            return 1
    return 0
for n, line in enumerate(sys.stdin):
    print(f"tcp:{exchange(t, b'T%06d' % n)} udp:{exchange(u, b'U%06d' % n)}", flush=True)
"""
)


def nft_json(site: Site, *what: str) -> list[dict]:
    argv = ["ip", "netns", "exec", site.host.netns, "nft", "-j", "list", *what]
    return json.loads(run(argv).stdout)["nftables"]


def packets(site: Site) -> dict[str, int]:
    """Every named counter of netplug's table: its packets."""
    found = nft_json(site, "counters", "table", "inet", "netplug")
    return {i["counter"]["name"]: i["counter"]["packets"] for i in found if "counter" in i}


def generation(site: Site) -> str:
    """The comment of the fast-path rule (the generation in force and its rules)."""
    rules = nft_json(site, "chain", "inet", "netplug", "forward")
    return next(i["rule"]["comment"] for i in rules if "comment" in i.get("rule", {}))


def test_established_connections_take_the_fast_path_until_the_rules_change(site: Site) -> None:
    """A TCP connection and a UDP flow from web to db-1 that a policy allows: their
    packets after the first pass the fast-path rule (its counter grows, the policy's
    allowed counter does not: it counts judged packets). Idle across a change that
    denies TCP, the connection is judged again at its next packet and cut; UDP,
    still allowed, is judged once and back on the fast path."""
    ports = [{"from": [{"names": ["web"]}], "ports": [tcp(8080), udp(9090)]}]
    apply([site.host], [ingress(DB1, ports)])
    argv = netns_python(site.c.ns("web"), IDLE, site.c.ip("db-1", 4), "8080", "9090", "1.0")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None

    def exchange() -> str:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    try:
        assert exchange() == "tcp:1 udp:1"
        before = packets(site)
        assert all(exchange() == "tcp:1 udp:1" for _ in range(20))
        after = packets(site)
        assert after["established/fast"] - before["established/fast"] >= 40
        assert after["pol/p/allowed"] == before["pol/p/allowed"]

        stamp = generation(site)
        udp_only = [{"from": [{"names": ["web"]}], "ports": [udp(9090)]}]
        ctl(site.host, "policy", "apply", "-", stdin=json.dumps([ingress(DB1, udp_only)]))
        assert wait_for(lambda: generation(site) != stamp, 5.0, 0.02), "rules not changed"
        judged = packets(site)
        assert exchange() == "tcp:0 udp:1"  # idle since the change: judged, TCP cut
        assert exchange() == "tcp:0 udp:1"
        after = packets(site)
        assert after["pol/p/dropped"] > judged["pol/p/dropped"]
        assert after["pol/p/allowed"] - judged["pol/p/allowed"] == 1  # UDP, once
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait(timeout=10)
        delete([site.host], ["p"])
