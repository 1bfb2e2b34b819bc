"""Segmentation and a policy across a 3-host netns-lab, on SQLite and on etcd.

Two hosts first; a policy applied; a third host joins afterwards and enforces
the policy before its first container's ADD returns (a denied client hammers
that container's address throughout). Then isolation and the policy hold over
the overlay between all three hosts (v4, v6; TCP, UDP, ICMP), and one host's
agent killed with SIGKILL and restarted opens nothing and closes nothing.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest
from policy_hosts import Containers, apply
from probes import Probe, echo_servers, exchanges, flows, mismatches

from netplug_env import NetplugHost
from runtimes import make_netns, require_commands
from traffic import counted, hammer

pytestmark = pytest.mark.netns

POLICY = {
    "name": "db-from-web",
    "network": "red",
    "select": {"names": ["db*"]},
    "ingress": [
        {
            "from": [{"names": ["web"]}],
            "ports": [{"protocol": "tcp", "port": 8080}, {"protocol": "udp", "port": 9090}],
        },
        {
            "from": [{"network": "green", "names": ["api"]}],
            "ports": [{"protocol": "tcp"}, {"protocol": "udp", "port": 9090}],
        },
    ],
}
G1_OUT = {  # egress judged on g1's host, towards containers of every host
    "name": "g1-out",
    "network": "green",
    "select": {"names": ["g1"]},
    "egress": [{"to": [{"names": ["g3", "api"]}], "ports": [{"protocol": "udp"}]}],
}
LATE_DB = "10.61.200.200"  # db-3's address, asked for statically: hammered before it exists


def expectations(c: Containers) -> list[Probe]:
    """(client, protocol, port, target, allowed) over the three hosts, v4 and v6."""
    table = [
        ("web", "tcp", 8080, "db", True),  # host1 -> host2, allowed
        ("web", "udp", 9090, "db-3", True),  # host1 -> host3
        ("web", "udp", 9091, "db", False),  # not the allowed port
        ("web", "icmp", 0, "db-3", False),
        ("other", "tcp", 8080, "db", False),  # same host, not a peer
        ("other", "udp", 9090, "db-3", False),
        ("api", "tcp", 8081, "db-3", True),  # green's api: the hole, host2 -> host3
        ("api", "udp", 9091, "db", False),
        ("g3", "tcp", 8080, "db", False),  # green, not api
        ("db", "tcp", 8080, "other", True),  # db's egress: unaffected
        ("other", "udp", 9090, "web", True),  # unselected
        ("g1", "udp", 9090, "g3", True),  # green across hosts: g1's egress allows UDP
        ("g1", "udp", 9091, "api", True),
        ("g1", "tcp", 8080, "g3", False),  # host1 -> host3, not UDP
        ("g1", "icmp", 0, "api", False),
        ("api", "tcp", 8080, "g1", True),  # g1's ingress: no policy has it
        ("web", "tcp", 8080, "g1", False),  # isolation, both ways, every protocol
        ("g1", "tcp", 8080, "web", False),
        ("g3", "udp", 9090, "web", False),
        ("web", "udp", 9090, "g3", False),
        ("other", "icmp", 0, "api", False),
        ("api", "icmp", 0, "other", False),
    ]
    return [
        Probe(c.ns(src), proto, c.ip(dst, v), port, ok)
        for src, proto, port, dst, ok in table
        for v in (4, 6)
    ]


def test_policy_on_a_three_host_lab(lab, tmp_path) -> None:
    require_commands("nft", packages="nftables")
    lab.up(2, lab.store_kind)

    def host(name: str) -> NetplugHost:
        # The lab's own dirs: ADD reaches the host's agent through its run dir.
        state = lab.state.load()
        return NetplugHost(state["hosts"][name]["netns"], lab.dir / name, name, state["store"])

    with ExitStack() as stack:
        start = stack.enter_context(echo_servers())
        c = Containers(lambda: stack.enter_context(make_netns("npt-ctr-")), start)
        h1, h2 = host("host1"), host("host2")
        c.add(h1, "web", "red")
        c.add(h1, "g1", "green")
        c.add(h2, "db", "red")
        c.add(h2, "other", "red")
        c.add(h2, "api", "green")
        apply([h1, h2], [POLICY, G1_OUT])

        # host3 joins with the policy stored; its first container is selected.
        lab.add_host(3)
        h3 = host("host3")
        late = c.make_netns()
        start(late)
        denied = hammer(c.ns("other"), LATE_DB, 4)
        time.sleep(0.5)
        c.add(h3, "db-3", "red", netns=late, static=LATE_DB)
        assert counted(denied)[0] == 0, "a denied connection reached db-3 while it was added"
        assert "ADD container=db-3 ifname=eth0 network=red ok" in h3.agent_log()  # via the agent
        c.add(h3, "g3", "green")

        wrong = mismatches(expectations(c))
        assert not wrong, "\n".join(wrong)

        # host2's agent (db's host) killed and restarted under traffic.
        pairs = [(c.ns("web"), c.ip("db", 4)), (c.ns("api"), c.ip("db-3", 6))]
        with flows(pairs, tmp_path) as logs:
            denied = [hammer(c.ns("other"), c.ip(t, 4), 5) for t in ("db", "db-3")]
            since = time.monotonic()
            time.sleep(0.5)
            lab.stop_agent("host2", kill=True)
            time.sleep(0.5)
            lab.start_agent("host2")
            time.sleep(1.0)
            for loop in denied:
                assert counted(loop)[0] == 0, "a denied connection got through the restart"
        for log in logs:
            for protocol in ("tcp", "udp"):
                seen = exchanges(log, protocol, since, 1e12)
                assert seen and all(seen), f"{log.name} {protocol}: {seen}"
        wrong = mismatches(expectations(c))
        assert not wrong, "\n".join(wrong)
