"""What the agents report of the policies they enforce, with real traffic in real
namespaces: packet counters in ``netplugctl policy list`` / ``show`` and on
/metrics, summed over the live hosts (a killed host's drop out with its lease),
and ``netplugctl status`` naming a host whose enforcer nft keeps refusing
(``NETPLUG_FAULTS=policy-table``), which reports itself degraded until nft
works again.
"""

from __future__ import annotations

import json

import pytest
from policy_hosts import Containers, ctl, status

from netplug.faults import ENV
from netplug.ipam.store.sqlite import SQLiteStore
from netplug.policy.report import HostCounters, from_listing, total

from netplug_env import AGENT_HTTP as HTTP
from netplug_env import NetplugHost, eventually, http_get, sample
from runtimes import require_commands, run
from traffic import PORT, tcp

pytestmark = pytest.mark.netns

# Counters in the store as fresh as the agent reads them (2 s), not every 30 s.
FRESH_COUNTERS = ("--counters-period", "0")
DB_FROM_WEB = {
    "name": "db-from-web",
    "network": "red",
    "select": {"names": ["db*"]},
    "ingress": [{"from": [{"names": ["web"]}], "ports": [{"protocol": "tcp", "port": PORT}]}],
}


def add(host: NetplugHost, containers, servers, name: str, network="red") -> tuple[str, str]:
    """A container named ``name`` on ``host``, serving PORT: (its namespace, its IPv4
    address)."""
    made = Containers(containers, servers)
    return made.add(host, name, network), made.ip(name)


def listed(host: NetplugHost) -> dict:
    """``policy list --json``'s db-from-web row: counters and reporting hosts."""
    (row,) = json.loads(ctl(host, "policy", "list", "--json"))
    return {k: row[k] for k in ("allowed", "dropped", "hosts")}


def kernel_counters(netns: str) -> HostCounters:
    """The counters in ``netns``'s table as nft lists them (what the agent reads)."""
    cmd = ["ip", "netns", "exec", netns, "nft", "-j", "list", "counters", "table", "inet"]
    return from_listing(json.loads(run([*cmd, "netplug"]).stdout))


def test_allowed_and_dropped_traffic_shows_in_policy_list_and_metrics(
    plain_host, containers, servers
):
    require_commands("nft", "curl", packages="nftables curl")
    with plain_host.agent(None, "--upstream", "none", "--http", HTTP, *FRESH_COUNTERS):
        web, _ = add(plain_host, containers, servers, "web")
        other, _ = add(plain_host, containers, servers, "other")
        _, db = add(plain_host, containers, servers, "db")
        green, _ = add(plain_host, containers, servers, "g1", "green")
        ctl(plain_host, "policy", "apply", "-", stdin=json.dumps(DB_FROM_WEB))
        assert eventually(lambda: status(plain_host)["hostsBehind"] == [])
        assert listed(plain_host)["hosts"] == 1

        for _ in range(3):
            assert tcp(web, db)
            assert not tcp(other, db)
        assert not tcp(green, db)  # across networks: isolation drops it

        def counted() -> bool:
            row = listed(plain_host)
            return row["allowed"] >= 3 and row["dropped"] >= 3 and row["hosts"] == 1

        assert eventually(counted)  # reported within the agent's 2 s period
        shown = json.loads(ctl(plain_host, "policy", "show", "db-from-web", "--json"))
        assert shown["policy"] == DB_FROM_WEB and shown["allowed"] >= 3
        code, metrics = http_get(plain_host.netns, "/metrics")
        assert code == 200
        kernel = kernel_counters(plain_host.netns).policies["db-from-web"]
        by_verdict = {
            verdict: sample(
                metrics, f'netplug_policy_packets_total{{policy="db-from-web",verdict="{verdict}"}}'
            )
            for verdict in ("allowed", "dropped")
        }
        assert 3 <= by_verdict["allowed"] <= kernel.allowed
        assert 3 <= by_verdict["dropped"] <= kernel.dropped
        # green's SYN may have come after the reading that showed the three and three.
        isolation = "netplug_isolation_dropped_packets_total"
        assert eventually(lambda: sample(http_get(plain_host.netns, "/metrics")[1], isolation) >= 1)
        assert sample(metrics, "netplug_policy_enforced") == 1
        assert sample(metrics, "netplug_policy_enforce_seconds_count") >= 1  # the apply
        # Within the wait for the table; the 1 s bar is bench/policy_bench.py's to measure.
        assert 0 < sample(metrics, "netplug_policy_enforce_last_seconds") < 5.0
        assert sample(metrics, "netplug_policy_revision") == status(plain_host)["policyRevision"]

        # A record the enforcer cannot read is listed by status as text too.
        store = SQLiteStore(str(plain_host.db))
        try:
            store.put("/netplug/policies/broken", b"not json")
        finally:
            store.close()
        line = "bad record /netplug/policies/broken (skipped by enforcer): MalformedRecord"
        assert eventually(lambda: line in ctl(plain_host, "status"))


def test_status_shows_a_host_whose_enforcer_nft_refuses_and_its_recovery(
    plain_host, containers, servers, monkeypatch
):
    """netplugd restarted with every nft batch failing (the table it left keeps
    enforcing what it had): a policy applied then is not in force; the agent says
    why (status, /healthz 503, /metrics, its log) and retries; an agent whose nft
    fails twice recovers by itself."""
    require_commands("nft", "curl", packages="nftables curl")
    with plain_host.agent():
        _, db = add(plain_host, containers, servers, "db")
        other, _ = add(plain_host, containers, servers, "other")
        assert eventually(lambda: status(plain_host)["hostsBehind"] == [])
    monkeypatch.setenv(ENV, "policy-table")  # netplugd inherits the test's environment
    with plain_host.agent(None, "--upstream", "none", "--http", HTTP):
        ctl(plain_host, "policy", "apply", "-", stdin=json.dumps(DB_FROM_WEB))

        def behind() -> list:
            return status(plain_host)["hostsBehind"]

        assert eventually(lambda: [h["host"] for h in behind()] == [plain_host.host_name])
        assert "injected failure in policy-table" in behind()[0]["error"]
        assert tcp(other, db)  # the policy is not in force here
        code, body = http_get(plain_host.netns, "/healthz")
        health = json.loads(body)
        assert code == 503 and health["status"] == "degraded"
        assert health["enforcement"]["state"] == "failing"
        assert "injected failure in policy-table" in health["enforcement"]["error"]
        text = ctl(plain_host, "status")
        assert "agent:        degraded" in text
        assert "policy enforcement failing for" in text
        assert f"host {plain_host.host_name} enforces no revision yet: " in text
        metrics = http_get(plain_host.netns, "/metrics")[1]
        assert sample(metrics, "netplug_policy_enforced") == 0
        assert sample(metrics, "netplug_policy_enforce_failures_total") >= 1
    assert "not in force" in plain_host.agent_log()
    assert "injected failure in policy-table" in plain_host.agent_log()

    monkeypatch.setenv(ENV, "policy-table*2")
    with plain_host.agent(None, "--upstream", "none", "--http", HTTP):
        assert eventually(lambda: status(plain_host)["hostsBehind"] == [])
        assert eventually(lambda: not tcp(other, db))
        row = status(plain_host)
        assert row["agent"] == "running" and row["agentHealth"]["enforcement"]["state"] == "ok"
        assert http_get(plain_host.netns, "/healthz")[0] == 200
        metrics = http_get(plain_host.netns, "/metrics")[1]
        assert sample(metrics, "netplug_policy_enforce_failures_total") == 2
        assert sample(metrics, "netplug_policy_enforced") == 1
    assert plain_host.agent_log().count("not in force (") == 2


def test_counters_are_summed_over_lab_hosts_and_a_killed_hosts_drop_out(
    lab, lab_hosts, containers, servers, monkeypatch
):
    """Two lab hosts, each judging the traffic to its own db: ``policy list`` sums
    both tables' counters; a host whose nft fails shows behind in status; killed,
    its counters leave the sums once its lease has expired."""
    require_commands("nft", packages="nftables")
    lab.agent_args = FRESH_COUNTERS
    hosts = lab_hosts(2)
    web, _ = add(hosts["host1"], containers, servers, "web")
    _, db1 = add(hosts["host1"], containers, servers, "db1")
    _, db2 = add(hosts["host2"], containers, servers, "db2")
    other, _ = add(hosts["host2"], containers, servers, "other")
    one = hosts["host1"]
    ctl(one, "policy", "apply", "-", stdin=json.dumps(DB_FROM_WEB))
    assert eventually(lambda: status(one)["hostsBehind"] == [])
    for db in (db1, db2):
        assert eventually(lambda db=db: tcp(web, db))  # across the overlay, or not
        assert not tcp(other, db)

    def kernels(*names: str) -> dict:
        summed = total(kernel_counters(hosts[h].netns) for h in names)
        counts = summed.policies["db-from-web"]
        return {"allowed": counts.allowed, "dropped": counts.dropped, "hosts": len(names)}

    each = [kernels(h)["allowed"] for h in hosts] + [kernels(h)["dropped"] for h in hosts]
    assert all(n > 0 for n in each), f"each host judges its own db: {each}"
    assert eventually(lambda: listed(one) == kernels("host1", "host2"))

    # host2's agent restarted with nft refusing every batch: behind once the policy changes.
    lab.stop_agent("host2")
    monkeypatch.setenv(ENV, "policy-table")
    lab.start_agent("host2")
    monkeypatch.delenv(ENV)
    changed = {**DB_FROM_WEB, "ingress": [{"from": [{"names": ["web", "other"]}]}]}
    ctl(one, "policy", "apply", "-", stdin=json.dumps(changed))

    def behind() -> list:
        return status(one)["hostsBehind"]

    assert eventually(lambda: [h["host"] for h in behind()] == ["host2"])
    assert "injected failure in policy-table" in behind()[0]["error"]
    assert eventually(lambda: tcp(other, db1))  # in force on host1

    lab.stop_agent("host2", kill=True)
    assert eventually(lambda: listed(one) == kernels("host1"), timeout=30)  # its lease: 5 s
    assert behind() == []  # no longer live
