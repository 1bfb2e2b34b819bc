"""``netns-lab demo``: three hosts, two containers on each, every container pings
every other across the VXLAN overlay, each looks the next one up by name
through its host's DNS; then two more networks, red and green, show that
networks are segments (on one host and across hosts), and a policy lets web
reach db on its port while another red container cannot. A report of PASS/FAIL
lines, then everything goes; the exit status is non-zero if any check failed.

The store is the embedded SQLite file: nothing to set up.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import permutations
from pathlib import Path

from netplug.lab import namespaces
from netplug.lab.lab import BIN, Lab
from netplug.lab.namespaces import run

HOSTS = 3
PER_HOST = 2
PING_TRIES = 3
DB_PORT = 5432
# Red and green containers: (name, network, host).
SEGMENTS = (
    ("web", "red", "host1"),
    ("other", "red", "host1"),
    ("db", "red", "host2"),
    ("g1", "green", "host1"),
    ("g2", "green", "host2"),
)
POLICY = {
    "name": "db-from-web",
    "network": "red",
    "select": {"names": ["db"]},
    "ingress": [{"from": [{"names": ["web"]}], "ports": [{"protocol": "tcp", "port": DB_PORT}]}],
}
# Answers every connection on argv[1] with "ok"; says "ready" once listening.
SERVER = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(16); print('ready', flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'ok'); c.close()\n"
)
# Exit status 0 when the server at argv[1]:argv[2] answered within a second.
CLIENT = (
    "import socket, sys\n"
    "try:\n"
    "    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)\n"
    "    c.settimeout(1); sys.exit(0 if c.recv(2) == b'ok' else 1)\n"
    "except OSError:\n"
    "    sys.exit(1)\n"
)


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f}s] {text}", flush=True)


class Report:
    """PASS/FAIL lines, printed as they come and counted."""

    def __init__(self, say: Progress) -> None:
        self.say, self.failed, self.passed = say, 0, 0

    def check(self, ok: bool, text: str) -> bool:
        self.say(f"{'PASS' if ok else 'FAIL'} {text}")
        self.passed += ok
        self.failed += not ok
        return ok


def demo(state_dir: Path, store: str = "sqlite", prefix: str = namespaces.PREFIX) -> int:
    say = Progress()
    report = Report(say)
    lab = Lab(state_dir, say, prefix)
    lab.agent_args = ("--counters-period", "0")  # policy list shows the traffic just sent
    try:
        lab.up(HOSTS, store)
        containers = {}
        for host in range(1, HOSTS + 1):
            for n in range(1, PER_HOST + 1):
                name = f"c{host}{n}"
                started = time.monotonic()
                containers[name] = _address(lab.run_container(f"host{host}", name))
                say(
                    f"container {name} on host{host}: {containers[name]} "
                    f"({(time.monotonic() - started) * 1000:.0f} ms)"
                )
        _ping_matrix(lab, containers, report)
        _lookups(lab, containers, report)
        print(_ctl(lab, "blocks").stdout.decode())
        _segments_and_policy(lab, report)
        print(_ctl(lab, "policy", "list").stdout.decode())
        say(f"result: {report.passed} checks passed, {report.failed} failed")
        return 1 if report.failed else 0
    finally:
        say("tearing down")
        lab.down()


def _address(interface: str) -> str:
    """10.244.5.2 of a result's 10.244.5.2/24."""
    return str(ipaddress.ip_interface(interface).ip)


def _ctl(lab: Lab, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """netplugctl from host1 (etcd, with --store etcd, is only reachable in the lab)."""
    state = lab.state.load()
    return run(
        "ip",
        "netns",
        "exec",
        state["hosts"]["host1"]["netns"],
        str(BIN / "netplugctl"),
        "--store",
        state["store"],
        "--host-name",
        "host1",
        *args,
        input=stdin,
        check=False,
    )


def _ping(netns: str, address: str, tries: int = PING_TRIES) -> bool:
    """Answered within ``tries`` one-second pings (the newest host's peers may still be
    a moment from programmed)."""
    for _ in range(tries):
        done = run("ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "1", address, check=False)
        if done.returncode == 0:
            return True
    return False


def _tcp(netns: str, address: str, port: int = DB_PORT) -> bool:
    done = run(
        "ip", "netns", "exec", netns, sys.executable, "-c", CLIENT, address, str(port), check=False
    )
    return done.returncode == 0


def _ping_matrix(lab: Lab, containers: dict[str, str], report: Report) -> None:
    pairs = list(permutations(containers, 2))

    def ping(pair: tuple[str, str]) -> bool:
        src, dst = pair
        return _ping(lab.container_netns(src), containers[dst])

    with ThreadPoolExecutor(8) as pool:
        answered = list(pool.map(ping, pairs))
    for (src, dst), ok in zip(pairs, answered, strict=True):
        if not ok:
            report.say(f"ping {src} -> {dst} ({containers[dst]}): no answer")
    report.check(all(answered), f"ping matrix: {sum(answered)}/{len(pairs)} answered")


def _lookups(lab: Lab, containers: dict[str, str], report: Report) -> None:
    """Each container asks its host's netplugd (its gateway) for the next container's
    name, which lives on another host."""
    names = list(containers)
    for src, dst in zip(names, names[1:] + names[:1], strict=True):
        server = containers[src].rsplit(".", 1)[0] + ".1"
        done = run(
            "ip",
            "netns",
            "exec",
            lab.container_netns(src),
            "dig",
            "+short",
            "+tries=2",
            "+time=1",
            f"@{server}",
            f"{dst}.lab.netplug.internal",
            check=False,
        )
        answer = done.stdout.decode().strip()
        report.check(
            answer == containers[dst],
            f"DNS: {src} asks for {dst}.lab.netplug.internal: {answer or 'no answer'}"
            + ("" if answer == containers[dst] else f" (expected {containers[dst]})"),
        )


def _segments_and_policy(lab: Lab, report: Report) -> None:
    """Networks red and green: red does not reach green (one host, across hosts,
    both ways) while red reaches red; then the policy: web reaches db's port, other
    (also red, not selected by the policy's ``from``) no longer does."""
    lab.add_network("red")
    lab.add_network("green")
    where, address = {}, {}
    hosts = {name: host for name, _, host in SEGMENTS}
    for name, network, host in SEGMENTS:
        address[name] = _address(lab.run_container(host, name, network))
        where[name] = f"{name} ({network}, {host})"
        report.say(f"container {where[name]}: {address[name]}")
    ns = lab.container_netns
    checks = [  # (source, destination, should it answer)
        ("web", "db", True),
        ("g1", "g2", True),
        ("web", "g1", False),
        ("g1", "web", False),
        ("web", "g2", False),
        ("g2", "web", False),
    ]
    with ThreadPoolExecutor(len(checks)) as pool:
        # A blocked pair gets one ping (its second): nothing would answer a retry.
        answered = list(
            pool.map(lambda c: _ping(ns(c[0]), address[c[1]], PING_TRIES if c[2] else 1), checks)
        )
    for (src, dst, expected), ok in zip(checks, answered, strict=True):
        same = "same host" if hosts[src] == hosts[dst] else "across hosts"
        verb = "reaches" if expected else "cannot reach"
        report.check(ok == expected, f"segments: {where[src]} {verb} {where[dst]} ({same})")

    server = subprocess.Popen(
        ["ip", "netns", "exec", ns("db"), sys.executable, "-c", SERVER, str(DB_PORT)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        report.check(server.stdout.readline().strip() == "ready", f"db listens on {DB_PORT}")
        report.check(_tcp(ns("other"), address["db"]), "no policy yet: other reaches db")
        applied = _ctl(lab, "policy", "apply", "-", stdin=json.dumps(POLICY).encode())
        failure = "" if applied.returncode == 0 else f": {applied.stderr.decode().strip()}"
        report.check(not failure, f"policy db-from-web applied (netplugctl policy apply){failure}")
        # In force within a second on every host: poll, bounded, until other is out.
        deadline = time.monotonic() + 5
        while _tcp(ns("other"), address["db"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        report.check(_tcp(ns("web"), address["db"]), f"policy: web reaches db:{DB_PORT}")
        report.check(
            not _tcp(ns("other"), address["db"]), f"policy: other cannot reach db:{DB_PORT}"
        )
    finally:
        server.kill()
        server.wait(timeout=10)
