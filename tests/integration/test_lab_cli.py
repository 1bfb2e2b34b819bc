"""The netns-lab command line: networks and aliases, many containers at once, a
5-host scale smoke test, and the demo's report. Each test drives the installed
``netns-lab`` executable with a state dir and namespace prefix of its own."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_interface, ip_network
from pathlib import Path

import pytest

from netplug.faults import ENV as FAULTS
from netplug.lab import namespaces, underlay
from netplug.lab.lab import BIN, Lab

from netplug_env import eventually, ping
from runtimes import require_commands, require_root

pytestmark = pytest.mark.netns

Cli = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(params=["sqlite"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    """``cli(*args)`` runs ``netns-lab --state-dir ... --prefix ... ARGS``; whatever
    the lab made is removed after (``cli.store`` is this run's store kind)."""
    require_root()
    if request.param == "etcd":
        require_commands("etcd", packages="etcd-server")
    state_dir, prefix = tmp_path / "lab", f"npt-c{uuid.uuid4().hex[:6]}-"

    def run(*args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(BIN / "netns-lab"), "--state-dir", str(state_dir), "--prefix", prefix, *args]
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)

    run.store, run.prefix, run.state_dir = request.param, prefix, state_dir
    try:
        yield run
    finally:
        Lab(state_dir, say=lambda text: None, prefix=prefix).down()
        assert namespaces.lab_namespaces(prefix) == []


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"{done.args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def started(out: str) -> dict[str, str]:
    """``run --count`` output: name -> address (without the prefix length)."""
    return {name: str(ip_interface(cidr).ip) for name, cidr in map(str.split, out.splitlines())}


def lookup(netns: str, name: str) -> str:
    """``name`` asked of the container's gateway (its host's netplugd)."""
    gateway = ip_network(container_cidr(netns), strict=False)[1]
    cmd = ["ip", "netns", "exec", netns, "dig", "+short", "+tries=2", "+time=1", f"@{gateway}"]
    return subprocess.run([*cmd, name], capture_output=True, text=True, timeout=15).stdout.strip()


def underlay_neighbours(netns: str, device: str) -> dict[str, str]:
    """``device``'s unicast neighbour entries in ``netns``, address -> MAC; asserts
    that every one is permanent (multicast ones, NOARP, are the kernel's own)."""
    out = subprocess.run(
        ["ip", "-4", "-n", netns, "-j", "neigh", "show", "dev", device, "nud", "all"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    found = [e for e in json.loads(out or "[]") if "NOARP" not in e["state"]]
    assert all(e["state"] == ["PERMANENT"] for e in found), found
    return {e["dst"]: e["lladdr"] for e in found}


def container_cidr(netns: str) -> str:
    out = subprocess.run(
        ["ip", "-n", netns, "-j", "-4", "addr", "show", "dev", "eth0"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    info = json.loads(out)[0]["addr_info"][0]
    return f"{info['local']}/{info['prefixlen']}"


@pytest.mark.parametrize("cli", ["sqlite", "etcd"], indirect=True)
def test_networks_aliases_and_policies_from_the_cli(cli, tmp_path):
    """``network add`` writes a conflist per host (bad input changes nothing), ``run
    --network --alias`` attaches there and registers the aliases, networks are
    segments across hosts, and ``policy``/``ctl`` reach the lab's store."""
    require_commands("dig", packages="bind9-dnsutils")
    ok(cli("up", "--hosts", "2", "--store", cli.store))
    assert "network red: 10.245.0.0/16" in ok(cli("network", "add", "red"))
    ok(cli("network", "add", "green", "--subnet", "10.250.0.0/16"))
    ok(cli("network", "add", "open", "--no-isolate"))
    confs = {p.name: p.read_text() for p in sorted(cli.state_dir.glob("host*/net.d/*"))}
    for bad, says in (
        (("red",), "network red exists already"),
        (("blue", "--subnet", "10.244.7.0/24"), "overlaps 10.244.0.0/16"),
        (("blue", "--subnet", "10.300.0.0/16"), "--subnet 10.300.0.0/16"),
        (("Blue_1",), "network name 'Blue_1'"),
    ):
        done = cli("network", "add", *bad)
        assert done.returncode == 1 and says in done.stderr, done.stderr
    assert {p.name: p.read_text() for p in sorted(cli.state_dir.glob("host*/net.d/*"))} == confs
    for host in ("host1", "host2"):
        conf = json.loads((cli.state_dir / host / "net.d" / "50-open.conflist").read_text())
        assert conf["name"] == "open" and conf["plugins"][0]["isolate"] is False
        conf = json.loads((cli.state_dir / host / "net.d" / "50-green.conflist").read_text())
        assert (
            conf["plugins"][0]["subnet"] == "10.250.0.0/16" and "isolate" not in conf["plugins"][0]
        )

    web = ok(cli("run", "host1", "web", "--network", "red", "--alias", "www", "--alias", "front"))
    assert ip_interface(web.strip()) in ip_network("10.245.0.0/16")
    db = ok(cli("run", "host2", "db", "--network", "red")).strip()
    green = ok(cli("run", "host2", "g", "--network", "green")).strip()
    assert ip_interface(green) in ip_network("10.250.0.0/16")
    done = cli("run", "host1", "x", "--network", "nope")
    assert done.returncode == 1 and "no network nope: networks are lab, red" in done.stderr

    state = Lab(cli.state_dir, prefix=cli.prefix).state.load()["containers"]
    ns = {name: c["netns"] for name, c in state.items()}
    web_ip = str(ip_interface(web.strip()).ip)
    for alias in ("web", "www", "front"):  # from another host, through its own agent
        assert eventually(lambda a=alias: lookup(ns["db"], f"{a}.red.netplug.internal") == web_ip)
    assert eventually(lambda: ping(ns["web"], str(ip_interface(db).ip)))
    assert not ping(ns["web"], str(ip_interface(green).ip))  # red -> green, across hosts

    policy = {"name": "db-from-web", "network": "red", "select": {"names": ["db"]}, "ingress": []}
    (tmp_path / "p.json").write_text(json.dumps(policy))
    ok(cli("policy", "apply", str(tmp_path / "p.json")))
    assert "db-from-web" in ok(cli("policy", "list"))
    assert "10.245." in ok(cli("ctl", "blocks"))
    out = ok(cli("status"))
    assert "green      10.250.0.0/16    yes" in out and "open       10.246.0.0/16    no" in out
    assert "web        host1    red" in out and "RSS" in out


def test_run_count_starts_30_containers_across_hosts_and_summarizes_failures(cli):
    """``run --count 10`` on each of 3 hosts: NAME-1..NAME-10, progress every 10 %,
    distinct addresses, reachable across hosts; a second run of existing names fails
    with a summary naming each, and ``down`` removes every namespace."""
    ok(cli("up", "--hosts", "3"))
    addresses = {}
    for h in (1, 2, 3):
        done = cli("run", f"host{h}", f"w{h}", "--count", "10", "--alias", f"a{h}")
        ok(done)
        got = started(done.stdout)
        assert sorted(got) == sorted(f"w{h}-{i}" for i in range(1, 11))
        assert done.stderr.count(f"containers on host{h}") == 10, done.stderr
        assert f"10/10 containers on host{h} (0 failed" in done.stderr
        addresses |= got
    assert len(set(addresses.values())) == 30
    state = Lab(cli.state_dir, prefix=cli.prefix).state.load()["containers"]
    assert state["w2-7"]["aliases"] == ["a2-7"] and state["w2-7"]["host"] == "host2"
    assert len(namespaces.lab_namespaces(cli.prefix)) == 1 + 3 + 30
    assert eventually(lambda: ping(state["w1-1"]["netns"], addresses["w3-10"]))
    # Another pair of hosts: theirs may learn each other's blocks a moment later.
    assert eventually(lambda: ping(state["w3-5"]["netns"], addresses["w2-3"]))

    again = cli("run", "host1", "w1", "--count", "3")
    assert again.returncode == 1 and again.stdout == ""
    assert "3 of 3 containers failed:" in again.stderr
    for i in (1, 2, 3):
        assert f"  w1-{i}: container w1-{i} exists already" in again.stderr
    done = cli("run", "host1", "z", "--count", "0")
    assert done.returncode == 1 and "--count and --parallel must be at least 1" in done.stderr

    ok(cli("down"))
    assert namespaces.lab_namespaces(cli.prefix) == []


def test_a_failed_add_is_deleted_before_its_namespace_goes(cli, monkeypatch):
    """An ADD that fails and whose own undo cannot release its address (faults
    armed in the host's netplugd): ``run`` sends DEL before it deletes the
    namespace, so the address is free again, and nothing is left on the host."""
    # Only the agents read it (``run`` gives the plugin an environment of its own).
    monkeypatch.setenv(FAULTS, "configure_container*1,undo release addresses*1")
    ok(cli("up", "--hosts", "1"))
    monkeypatch.delenv(FAULTS)
    done = cli("run", "host1", "c1")
    assert done.returncode == 1 and "injected failure in configure_container" in done.stderr
    assert json.loads(ok(cli("ctl", "allocations", "--json"))) == []
    assert [n for n in namespaces.lab_namespaces(cli.prefix) if n.endswith("c-c1")] == []
    host = Lab(cli.state_dir, prefix=cli.prefix).state.load()["hosts"]["host1"]["netns"]
    links = subprocess.run(
        ["ip", "-n", host, "-j", "link", "show", "type", "veth"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert [link["ifname"] for link in json.loads(links.stdout)] == ["under0"]  # the underlay
    address = ok(cli("run", "host1", "c1")).strip()  # the name and its address again
    assert json.loads(ok(cli("ctl", "allocations", "--json")))[0]["addresses"] == address


def test_five_hosts_ten_containers_each_reach_and_resolve_each_other(cli):
    """The scale smoke test (issue 12): 5 hosts up in parallel with progress, 10
    containers on each via --count, every host's container pings a container on
    every other host and resolves one of its names; down leaves nothing."""
    require_commands("dig", packages="bind9-dnsutils")
    began = time.monotonic()
    up = ok(cli("up", "--hosts", "5"))
    for n in range(1, 6):
        assert f"host {n}/5 up (" in up
    with ThreadPoolExecutor(5) as pool:
        outs = list(
            pool.map(lambda h: ok(cli("run", f"host{h}", f"s{h}", "--count", "10")), range(1, 6))
        )
    addresses = {name: a for out in outs for name, a in started(out).items()}
    assert len(addresses) == 50 and len(set(addresses.values())) == 50
    state = Lab(cli.state_dir, prefix=cli.prefix).state.load()
    pairs = [(i, j) for i in range(1, 6) for j in range(1, 6) if i != j]

    def reaches(pair: tuple[int, int]) -> bool:
        src, dst = f"s{pair[0]}-1", f"s{pair[1]}-{pair[0] + 2}"
        return eventually(lambda: ping(state["containers"][src]["netns"], addresses[dst]))

    def resolves(i: int) -> bool:
        dst = f"s{i % 5 + 1}-9"
        netns = state["containers"][f"s{i}-2"]["netns"]
        return eventually(lambda: lookup(netns, f"{dst}.lab.netplug.internal") == addresses[dst])

    with ThreadPoolExecutor(8) as pool:
        reached = dict(zip(pairs, pool.map(reaches, pairs), strict=True))
        resolved = dict(zip(range(1, 6), pool.map(resolves, range(1, 6)), strict=True))
    assert all(reached.values()), [p for p, r in reached.items() if not r]
    assert all(resolved.values()), [h for h, r in resolved.items() if not r]
    agents = [p for p in state["processes"] if p["what"].endswith("netplugd")]
    assert len(agents) == 5 and all(namespaces.rss_kib(p["pid"]) for p in agents)
    # The fabric's neighbours are permanent, programmed by the lab: the underlay
    # traffic above put nothing in the box's shared, capped neighbour table.
    hosts = {f"192.0.2.{10 + n}": f"{cli.prefix}host{n}" for n in range(1, 6)}
    for address, netns in hosts.items():
        want = {*hosts, "192.0.2.1"} - {address}
        assert underlay_neighbours(netns, "under0") == {a: underlay.mac(a) for a in want}
    fabric = underlay_neighbours(f"{cli.prefix}fabric", "fabric0")
    assert fabric == {a: underlay.mac(a) for a in hosts}

    ok(cli("down"))
    assert namespaces.lab_namespaces(cli.prefix) == []
    assert not any(namespaces.start_time(p["pid"]) == p["start"] for p in agents)
    assert time.monotonic() - began < 120


def test_the_demo_reports_segmentation_and_a_policy_and_cleans_up(cli):
    """The demo on SQLite: every check a PASS line (ping matrix, DNS, red/green on
    one host and across, the policy both ways), exit 0, under 60 s, nothing left."""
    require_commands("dig", packages="bind9-dnsutils")
    began = time.monotonic()
    done = cli("demo")
    took = time.monotonic() - began
    ok(done)
    out = done.stdout
    assert "FAIL" not in out and "PASS ping matrix: 30/30 answered" in out
    for line in (
        "PASS segments: web (red, host1) reaches db (red, host2) (across hosts)",
        "PASS segments: web (red, host1) cannot reach g1 (green, host1) (same host)",
        "PASS segments: g2 (green, host2) cannot reach web (red, host1) (across hosts)",
        "PASS no policy yet: other reaches db",
        "PASS policy: web reaches db:5432",
        "PASS policy: other cannot reach db:5432",
        " 0 failed",
    ):
        assert line in out, out
    assert took < 60
    assert namespaces.lab_namespaces(cli.prefix) == []
