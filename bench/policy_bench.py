"""Policy benchmark: what network policies cost in throughput, ADD latency and update time.

Four measurements, each optional (``--only``):

throughput
    iperf3 TCP from a container on lab host1 to one on host2, with 100 policies
    selecting the server (only the last one, by name order, lets the client in:
    every packet of the client's direction walks all the others' rules) and
    ``--containers`` (1000) containers in the policies' address sets, against the
    same lab with no policy, and (a diagnostic: what the walk costs) with the
    first policy letting the client in; the states alternate round by round.
add
    ADD latency through the agent on host1, populated with ``--containers``
    containers, with 50 policies (the new container selected by one) against no
    policy; and on host1 against host3 (issue 12), both without policies. host3
    holds one container, so that its bridge exists as on host1 (a host's first
    ADD also makes it). Each round measures every setup, alternating which first.
convergence
    ``netplugctl policy apply`` of a changed policy until every lab host's table
    holds the new rule (seen by ``nft monitor`` in each host, so the time is the
    kernel's, not a poll's), p50/p99 over ``--changes`` changes, on SQLite and etcd.
update
    One policy change applied to a table holding 10, 100 and 1000 policies and
    ``--containers`` containers (a namespace of its own, no agent): the time to
    compile, to diff and to run the ``nft`` batch, and the batch's size, against
    replacing the table whole; and the enforcer's cost for one batch of store
    events (a container arriving) at that many containers.

Progress goes to stderr; a Markdown table for the README goes to stdout
(``--json FILE`` writes every number as well). Needs root. Everything it
makes is a network namespace whose name starts with ``npb-``, removed at the
end, also on Ctrl-C; traffic stays inside them.

    sudo .venv/bin/python bench/policy_bench.py
    sudo .venv/bin/python bench/policy_bench.py --only update --only convergence
    sudo .venv/bin/python bench/policy_bench.py --only add --containers 200 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

from netplug.lab import namespaces
from netplug.lab.lab import BIN, Lab
from netplug.lab.namespaces import run

import harness
from harness import Owned, describe_machine, quantile, run_guarded, stamped_printer
from overlay_bench import Endpoint, iperf, wait_reachable

NETWORK = "lab"  # the lab's one network
IPERF_PORT = 5201
GROUP = 10  # containers per name group (g00-00 .. g00-09): what one policy selects
BAR_THROUGHPUT = 0.95
BAR_ADD = 1.2
BAR_CONVERGENCE_P99 = 1.0
POLICY_COUNTS = (10, 100, 1000)
SETTLE_TIMEOUT = 120.0  # seconds a host's table may take to show a policy state
STATE_HOSTS = {"policies": "host1", "none": "host1 and host3"}  # where a state's ADDs go
LAB_CONTAINERS = (("host1", "cli"), ("host2", "srv"), ("host3", "c3"))
PARTS = ("update", "throughput", "add", "convergence")

say = stamped_printer(width=7)


# -- policies ------------------------------------------------------------------


def group_name(group: int, member: int) -> str:
    return f"g{group:02d}-{member:02d}"


def policy_docs(
    count: int, groups: int, allow: str | None = None, first: bool = False
) -> list[dict[str, Any]]:
    """``count`` policies p0000.., each selecting the server ``srv`` and one name group,
    admitting the next group on a port of its own; the last one by name (the first
    with ``first``) also admits ``allow`` on the iperf port. Each set holds real
    addresses: the groups'."""
    docs = []
    for i in range(count):
        g, peer = i % max(groups, 1), (i + 1) % max(groups, 1)
        ingress = [{"from": [{"names": [f"g{peer:02d}-*"]}], "ports": [{"port": 9000 + i % 1000}]}]
        if allow and i == (0 if first else count - 1):
            ingress.append({"from": [{"names": [allow]}], "ports": [{"port": IPERF_PORT}]})
        docs.append(
            {
                "name": f"p{i:04d}",
                "network": NETWORK,
                "select": {"names": ["srv", f"g{g:02d}-*"]},
                "ingress": ingress,
            }
        )
    return docs


def store_policies(lab: Lab, docs: list[dict[str, Any]]) -> None:
    """Replace every stored policy by ``docs`` (in transactions of 100)."""
    from netplug.ipam import policies
    from netplug.ipam.schema import Policies
    from netplug.policy.model import parse

    parsed = parse(json.dumps(docs), None) if docs else ()
    with lab.store() as store:
        store.delete(Policies.PREFIX, prefix=True)
        for i in range(0, len(parsed), 100):
            policies.apply(store, parsed[i : i + 100])


def host_netns(lab: Lab, host: str) -> str:
    return lab.state.load()["hosts"][host]["netns"]


def table_text(netns: str) -> str:
    done = run("ip", "netns", "exec", netns, "nft", "list", "table", "inet", "netplug", check=False)
    return done.stdout.decode() if done.returncode == 0 else ""


def enforced_policies(netns: str) -> int:
    return len(set(re.findall(r"set pol/([^/]+)/sel4 ", table_text(netns))))


def wait_enforced(lab: Lab, hosts: list[str], count: int) -> float:
    """Wait until each host's table has ``count`` policies' sets; seconds waited."""
    started = time.monotonic()
    for host in hosts:
        netns = host_netns(lab, host)
        while enforced_policies(netns) != count:
            if time.monotonic() - started > SETTLE_TIMEOUT:
                raise RuntimeError(f"{host} does not enforce {count} policies")
            time.sleep(0.2)
    return time.monotonic() - started


def set_addresses(netns: str) -> dict[str, int]:
    """Distinct addresses in the policy sets of ``netns``'s table, and elements in all."""
    done = run("ip", "netns", "exec", netns, "nft", "-j", "list", "sets", "table", "inet",
               "netplug", check=False)  # fmt: skip
    addresses, elements, sets = set(), 0, 0
    for item in json.loads(done.stdout or b'{"nftables": []}')["nftables"]:
        body = item.get("set")
        if body and body["name"].startswith("pol/"):
            sets += 1
            elements += len(body.get("elem", []))
            addresses.update(str(e) for e in body.get("elem", []))
    return {"sets": sets, "elements": elements, "addresses": len(addresses)}


# -- containers ----------------------------------------------------------------


def add_container(lab: Lab, host: str, name: str) -> tuple[str, float]:
    """A container the lab's state does not record (so that taking the lab down
    does not DEL each one: deleting its host namespace removes it); its address
    and the ADD's seconds."""
    namespaces.create(f"{lab.prefix}c-{name}")
    started = time.monotonic()
    result = lab.cni("ADD", name, host)
    took = time.monotonic() - started
    assert result is not None
    return result["ips"][0]["address"].split("/")[0], took


def del_container(lab: Lab, host: str, name: str) -> float:
    started = time.monotonic()
    lab.cni("DEL", name, host)
    took = time.monotonic() - started
    namespaces.delete(f"{lab.prefix}c-{name}")
    return took


def populate(lab: Lab, host: str, count: int, parallel: int) -> float:
    """``count`` containers g00-00, g00-01, ... on ``host``, ``parallel`` ADDs at once."""
    names = [group_name(i // GROUP, i % GROUP) for i in range(count)]
    started = time.monotonic()
    done = 0
    with ThreadPoolExecutor(parallel) as pool:
        for _ in pool.map(lambda n: add_container(lab, host, n), names):
            done += 1
            if done % 100 == 0 or done == count:
                say(f"  {done}/{count} containers on {host}")
    return time.monotonic() - started


def lab_with_containers(owned: Owned, store: str) -> tuple[Lab, str]:
    """A 3-host lab with cli on host1, srv on host2 and c3 on host3 (so that every
    host holds the table, and an ADD on host3 finds its bridge made); and srv's address."""
    lab = owned.lab(f"l{store[0]}")
    say(f"lab: 3 hosts on {store}")
    lab.up(3, store)
    addresses = {n: add_container(lab, h, n)[0] for h, n in LAB_CONTAINERS}
    return lab, addresses["srv"]


# -- throughput ----------------------------------------------------------------


def throughput(owned: Owned, lab: Lab, address: str, args: argparse.Namespace) -> dict[str, Any]:
    groups = args.containers // GROUP
    docs = {
        "policies": policy_docs(args.policies, groups, allow="cli"),
        "policies-first": policy_docs(args.policies, groups, allow="cli", first=True),
        "none": [],
    }
    ep = Endpoint(f"{lab.prefix}c-cli", f"{lab.prefix}c-srv", address)
    store_policies(lab, [])  # the policies allow the client TCP only: ping without any
    wait_enforced(lab, ["host1", "host2"], 0)
    wait_reachable(ep.client_netns, ep.address)
    runs: dict[str, list[dict[str, float]]] = {setup: [] for setup in docs}
    sets: dict[str, int] = {}
    for r in range(args.rounds):
        order = list(docs) if r % 2 == 0 else list(docs)[::-1]
        for setup in order:
            store_policies(lab, docs[setup])
            wait_enforced(lab, ["host1", "host2"], len(docs[setup]))
            wait_idle(lab)
            if setup == "policies" and not sets:
                sets = set_addresses(host_netns(lab, "host2"))
                say(f"  host2's policy sets: {sets}")
            result = iperf(owned, ep, args.seconds)
            runs[setup].append(result)
            say(f"  round {r + 1} {setup}: {result['gbps']:.2f} Gbit/s")
    paired = {
        setup: [p["gbps"] / n["gbps"] for p, n in zip(runs[setup], runs["none"], strict=True)]
        for setup in ("policies", "policies-first")
    }
    return {
        "policies": args.policies,
        "containers": args.containers,
        "sets": sets,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "median_gbps": {k: statistics.median(x["gbps"] for x in v) for k, v in runs.items()},
        "ratio_paired": statistics.median(paired["policies"]),
        "ratio_first_paired": statistics.median(paired["policies-first"]),
        "paired": paired,
        "runs": runs,
    }


# -- ADD latency -----------------------------------------------------------------


def agent_cpu(lab: Lab) -> dict[str, float]:
    """CPU seconds each host's agent has used (user + system)."""
    used = {}
    for proc in lab.state.load()["processes"]:
        if proc["what"].endswith("/netplugd"):
            fields = Path(f"/proc/{proc['pid']}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = int(fields[11]) + int(fields[12])
            used[proc["what"].split("/")[0]] = ticks / os.sysconf("SC_CLK_TCK")
    return used


def wait_idle(lab: Lab, timeout: float = 20.0) -> None:
    """Wait until the agents together use under a tenth of a core over half a second
    (done with a policy change: every host recompiles), for ``timeout`` at most."""
    deadline = time.monotonic() + timeout
    before = agent_cpu(lab)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = agent_cpu(lab)
        if sum(now.values()) - sum(before.values()) < 0.05:
            return
        before = now
    say("  warning: the agents did not go idle")


def add_latency(lab: Lab, args: argparse.Namespace) -> dict[str, Any]:
    """Per round, in a policy state (alternating): ADD+DEL on host1 (populated) and
    host3 (one container), ``--adds`` times each, interleaved."""
    groups = max(args.containers // GROUP, 1)
    docs = policy_docs(50, groups)
    samples: dict[str, list[float]] = {"host1+policies": [], "host1": [], "host3": []}
    dels: dict[str, list[float]] = {k: [] for k in samples}
    cpu: dict[str, dict[str, float]] = {}  # state -> agent -> CPU seconds over its ADD+DELs
    pairs = {"policies": 0, "none": 0}
    rounds: list[dict[str, float]] = []  # each round's medians
    n = 0
    for r in range(args.rounds):
        mark = {k: len(v) for k, v in samples.items()}
        order = (True, False) if r % 2 == 0 else (False, True)
        for with_policies in order:
            store_policies(lab, docs if with_policies else [])
            wait_enforced(lab, ["host1"], 50 if with_policies else 0)
            wait_idle(lab)
            hosts = ["host1"] if with_policies else ["host1", "host3"]
            state = "policies" if with_policies else "none"
            before = agent_cpu(lab)
            for k in range(args.adds):
                for host in hosts if k % 2 == 0 else hosts[::-1]:
                    n += 1
                    name = f"g{n % 50:02d}-a{n}"  # selected by one policy of the 50
                    key = f"{host}+policies" if with_policies else host
                    samples[key].append(add_container(lab, host, name)[1])
                    dels[key].append(del_container(lab, host, name))
                    pairs[state] += 1
            after = agent_cpu(lab)
            totals = cpu.setdefault(state, {})
            for agent, seconds in after.items():
                totals[agent] = totals.get(agent, 0.0) + seconds - before.get(agent, 0.0)
        rounds.append({k: statistics.median(v[mark[k] :]) for k, v in samples.items()})
        say(
            f"  round {r + 1}: "
            + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in rounds[-1].items())
        )
    p50 = {k: statistics.median(v) for k, v in samples.items()}
    for state, agents in cpu.items():
        per = ", ".join(f"{a} {1000 * t / max(pairs[state], 1):.0f}" for a, t in agents.items())
        say(f"  agent CPU ms per ADD+DEL ({state}: {pairs[state]} on {STATE_HOSTS[state]}): {per}")
    return {
        "containers": args.containers,
        "adds_per_setup": {k: len(v) for k, v in samples.items()},
        "p50_s": p50,
        "p90_s": {k: quantile(v, 0.9) for k, v in samples.items()},
        "del_p50_s": {k: statistics.median(v) for k, v in dels.items()},
        "agent_cpu_ms_per_add_del": {
            state: {a: 1000 * t / max(pairs[state], 1) for a, t in agents.items()}
            for state, agents in cpu.items()
        },
        # The bars are judged on per-round ratios: a round's setups are neighbours
        # in time, so a busy machine slows them alike, unlike across rounds.
        "ratio_policies": statistics.median(r["host1+policies"] / r["host1"] for r in rounds),
        "ratio_populated": statistics.median(r["host1"] / r["host3"] for r in rounds),
        "rounds": rounds,
        "samples": samples,
    }


# -- convergence -----------------------------------------------------------------


class RuleWatch:
    """``nft monitor rules`` in each host: when each marker's rule showed up."""

    def __init__(self, owned: Owned, lab: Lab, hosts: list[str]) -> None:
        self.seen: dict[str, dict[str, float]] = {h: {} for h in hosts}
        self.cond = threading.Condition()
        self.procs = []
        for host in hosts:
            proc = owned.spawn(["ip", "netns", "exec", host_netns(lab, host), "nft", "monitor",
                                "rules"])  # fmt: skip
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(host, proc), daemon=True).start()

    def _read(self, host: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic()
            for marker in re.findall(rb"dport (?:\{ )?(2\d{4})\b", line):
                with self.cond:
                    self.seen[host].setdefault(marker.decode(), now)
                    self.cond.notify_all()

    def wait(self, marker: str, timeout: float) -> dict[str, float | None]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(marker in s for s in self.seen.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return {h: s.get(marker) for h, s in self.seen.items()}


def convergence(owned: Owned, lab: Lab, args: argparse.Namespace, label: str) -> dict[str, Any]:
    hosts = ["host1", "host2", "host3"]
    store_policies(lab, policy_docs(10, 1))  # a realistic table, not an empty one
    wait_enforced(lab, hosts, 10)
    url = lab.state.load()["store"]
    watch = RuleWatch(owned, lab, hosts)
    time.sleep(0.5)  # the monitors subscribe
    totals, applies = [], []
    for i in range(args.changes):
        port = 20000 + i
        rule = {"from": [{"names": ["cli"]}], "ports": [{"port": port}]}
        doc = [
            {"name": "conv", "network": NETWORK, "select": {"names": ["srv"]}, "ingress": [rule]}
        ]
        started = time.monotonic()
        done = run("ip", "netns", "exec", lab.fabric, str(BIN / "netplugctl"), "--store", url,
                   "policy", "apply", "-", input=json.dumps(doc).encode(), check=False)  # fmt: skip
        applied = time.monotonic()
        if done.returncode != 0:
            raise RuntimeError(f"policy apply: {done.stderr.decode()}")
        seen = watch.wait(str(port), args.change_timeout)
        missing = [h for h, t in seen.items() if t is None]
        if missing:
            raise RuntimeError(f"change {i}: not enforced on {missing} in {args.change_timeout} s")
        totals.append(max(t for t in seen.values() if t is not None) - started)
        applies.append(applied - started)
        time.sleep(0.05)
    for proc in watch.procs:
        owned.stop(proc)
    say(
        f"  {label}: p50 {quantile(totals, 0.5) * 1000:.0f} ms, p99 "
        f"{quantile(totals, 0.99) * 1000:.0f} ms (netplugctl itself p50 "
        f"{quantile(applies, 0.5) * 1000:.0f} ms)"
    )
    return {
        "store": label,
        "changes": len(totals),
        "p50_s": quantile(totals, 0.5),
        "p99_s": quantile(totals, 0.99),
        "max_s": max(totals),
        "netplugctl_p50_s": quantile(applies, 0.5),
        "samples": totals,
    }


# -- update time -----------------------------------------------------------------


def update_time(owned: Owned, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per policy count: one policy's port changed on a table in a namespace of our own."""
    from netplug.agent.enforcer import Enforcer
    from netplug.cni.segmentation import Inputs
    from netplug.net import conntrack, netns, policy_table
    from netplug.policy.model import parse
    from netplug.policy.plan import Endpoint as Ep
    from netplug.policy.plan import NetworkInfo, compile_plan, delta, render

    net = NetworkInfo(NETWORK, (ip_network("10.244.0.0/16"),))
    base = ip_address("10.244.0.0")
    groups = args.containers // GROUP
    endpoints = {
        f"a/{i}": Ep(
            NETWORK,
            "here" if i % 3 == 0 else f"h{i % 7}",  # a third of them local
            (base + 256 + i,),
            frozenset({group_name(i // GROUP, i % GROUP)}),
        )
        for i in range(args.containers)
    }
    rows = []
    where = namespaces.path(owned.namespace("update"))
    for count in POLICY_COUNTS:
        docs = policy_docs(count, groups)
        before = parse(json.dumps(docs), None)
        docs[count // 2]["ingress"][0]["ports"][0]["port"] = 8000
        after = parse(json.dumps(docs), None)
        with netns.entered(where):
            old = compile_plan(before, [net]).dataplane(endpoints.values(), "here")
            t = time.monotonic()
            policy_table.apply(render(old))
            full_apply = time.monotonic() - t
            t = time.monotonic()
            plan = compile_plan(after, [net])
            new = plan.dataplane(endpoints.values(), "here")
            compiled = time.monotonic() - t
            t = time.monotonic()
            batch = delta(old, new)
            diffed = time.monotonic() - t
            t = time.monotonic()
            policy_table.apply(batch)
            applied = time.monotonic() - t
            # The enforcer's batch: one container arriving, from the store's records.
            enforcer = Enforcer("here", lambda: Inputs(), forget=conntrack.forget_or_log)
            fed = Inputs({NETWORK: net}, dict(endpoints), {p.name: p for p in after})
            enforcer.sync(fed)
            arrived = Ep(NETWORK, "there", (base + 65000,), frozenset({"g00-new"}))
            fed2 = Inputs({NETWORK: net}, {**endpoints, "a/new": arrived}, fed.policies)
            t = time.monotonic()
            enforcer.sync(fed2)
            batch_cost = time.monotonic() - t
            policy_table.remove("inet netplug")
        row = {
            "policies": count,
            "containers": args.containers,
            "rules": sum(len(r or ()) for r in new.chains.values()),
            "elements": sum(len(m) for m in new.members.values()),
            "compile_s": compiled,
            "delta_s": diffed,
            "apply_s": applied,
            "batch_lines": batch.count("\n"),
            "full_batch_lines": render(new).count("\n"),
            "full_apply_s": full_apply,
            "enforcer_batch_s": batch_cost,
        }
        say(
            f"  {count} policies: compile {compiled * 1000:.0f} ms, delta {diffed * 1000:.0f} ms "
            f"({row['batch_lines']} lines), nft {applied * 1000:.0f} ms; whole table "
            f"{row['full_batch_lines']} lines, nft {full_apply * 1000:.0f} ms; enforcer batch "
            f"(a container arrives) {batch_cost * 1000:.0f} ms"
        )
        rows.append(row)
    return rows


# -- report --------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def _add_bar(ratio: float) -> str:
    return f"<= {BAR_ADD}x ({_verdict(ratio <= BAR_ADD)})"


def table(results: dict[str, Any]) -> Iterator[str]:
    yield "| Measure | Result | Bar |"
    yield "|---|---|---|"
    if "throughput" in results:
        t = results["throughput"]
        m = t["median_gbps"]
        yield (
            f"| TCP throughput host1 -> host2, {t['policies']} policies selecting the server, "
            f"{t['sets'].get('addresses', '?')} addresses in {t['sets'].get('sets', '?')} sets "
            f"| {m['policies']:.2f} Gbit/s (median of {t['rounds']} x {t['seconds']} s) | |"
        )
        yield f"| TCP throughput, same lab, no policy | {m['none']:.2f} Gbit/s | |"
        r = t["ratio_paired"]
        bar = f">= {BAR_THROUGHPUT}x ({_verdict(r >= BAR_THROUGHPUT)})"
        yield f"| policies / none, median of per-round ratios | {r:.2f}x | {bar} |"
        yield (
            f"| (diagnostic) the client admitted by the first policy, not the last: "
            f"{m['policies-first']:.2f} Gbit/s; / none | {t['ratio_first_paired']:.2f}x | |"
        )
    if "add" in results:
        a = results["add"]
        p = a["p50_s"]
        rows = (
            ("host1+policies", "host1", "ratio_policies", "+ 50 policies / no policy"),
            ("host1", "host3", "ratio_populated", "/ host with 1"),
        )
        for top, bottom, ratio, what in rows:
            yield (
                f"| ADD (agent), host with {a['containers']} containers {what} "
                f"| {p[top] * 1000:.0f} / {p[bottom] * 1000:.0f} ms (medians); per-round "
                f"ratios' median {a[ratio]:.2f}x | {_add_bar(a[ratio])} |"
            )
    for c in results.get("convergence", []):
        yield (
            f"| Policy change (`netplugctl policy apply`) until in all 3 hosts' nft tables, "
            f"{c['store']} ({c['changes']} changes) | p50 {c['p50_s'] * 1000:.0f} ms, "
            f"p99 {c['p99_s'] * 1000:.0f} ms | p99 < {BAR_CONVERGENCE_P99:g} s "
            f"({_verdict(c['p99_s'] < BAR_CONVERGENCE_P99)}) |"
        )
    for u in results.get("update", []):
        yield (
            f"| One policy changed among {u['policies']} ({u['rules']} rules, "
            f"{u['elements']} set elements, {u['containers']} containers) | compile "
            f"{u['compile_s'] * 1000:.0f} ms + diff {u['delta_s'] * 1000:.0f} ms + nft "
            f"{u['apply_s'] * 1000:.0f} ms ({u['batch_lines']} lines; whole table "
            f"{u['full_batch_lines']} lines, {u['full_apply_s'] * 1000:.0f} ms); enforcer, "
            f"a container arriving: {u['enforcer_batch_s'] * 1000:.0f} ms | |"
        )


def machine() -> str:
    nft = run("nft", "--version", check=False).stdout.decode().strip()
    return describe_machine(nft, os.cpu_count() or 1, say)


# -- main ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = harness.bench_parser(__doc__, "root, nft, iperf3 and ping", PARTS)
    parser.add_argument("--containers", type=int, default=1000,
                        help="containers on host1 and in the sets (1000)")  # fmt: skip
    parser.add_argument("--parallel", type=int, default=4, help="ADDs at once to populate (4)")
    parser.add_argument("--policies", type=int, default=100, help="policies for throughput (100)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of throughput and ADD (6)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per iperf3 run (5)")
    parser.add_argument("--adds", type=int, default=10, help="ADDs per setup per round (10)")
    parser.add_argument("--changes", type=int, default=50, help="policy changes timed (50)")
    parser.add_argument("--change-timeout", type=float, default=10.0,
                        help="give up on a change after this (10 s)")  # fmt: skip
    parser.add_argument("--store", action="append", choices=["sqlite", "etcd"],
                        help="stores for convergence (default: both)")  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    args = parser.parse_args(argv)
    args.only = args.only or list(PARTS)
    args.store = args.store or ["sqlite", "etcd"]
    if not GROUP <= args.containers <= 4000 or not 1 <= args.parallel <= 16:
        parser.error(f"--containers must be {GROUP}..4000 and --parallel 1..16")
    if not 1 <= args.policies <= 1000 or not 1 <= args.rounds <= 20 or not 1 <= args.adds <= 100:
        parser.error("--policies must be 1..1000, --rounds 1..20, --adds 1..100")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not harness.needs_root("policy_bench"):
        return 2
    owned = Owned(say)
    results: dict[str, Any] = {"machine": machine(), "tag": owned.tag, "argv": sys.argv[1:]}

    def measure() -> None:
        if "update" in args.only:
            say("update: one policy change at 10, 100, 1000 policies")
            results["update"] = update_time(owned, args)
        labs: dict[str, tuple[Lab, str]] = {}
        convergence_here = "convergence" in args.only and "sqlite" in args.store
        if {"throughput", "add"} & set(args.only) or convergence_here:
            labs["sqlite"] = lab_with_containers(owned, "sqlite")
        if {"throughput", "add"} & set(args.only):
            say(f"populating host1 with {args.containers} containers, {args.parallel} at once")
            took = populate(labs["sqlite"][0], "host1", args.containers, args.parallel)
            results["populate_s"] = took
        if "add" in args.only:
            say("add: ADD latency, host1 (populated) with and without 50 policies, host3 with 1")
            results["add"] = add_latency(labs["sqlite"][0], args)
        if "throughput" in args.only:
            say(f"throughput: {args.policies} policies against none, {args.rounds} rounds")
            results["throughput"] = throughput(owned, *labs["sqlite"], args)
        if "convergence" in args.only:
            results["convergence"] = []
            for store in args.store:
                lab = (labs.get(store) or lab_with_containers(owned, store))[0]
                say(f"convergence on {store}: {args.changes} changes")
                results["convergence"].append(convergence(owned, lab, args, store))
                owned.drop_lab(lab)

    if not run_guarded(measure, owned.release, say):
        return 130
    return harness.report(table(results), results["machine"], "policy_bench.py", args.json, results)


if __name__ == "__main__":
    sys.exit(main())
