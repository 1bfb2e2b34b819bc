"""DNS benchmark: netplug-dns QPS against dnsmasq and aardvark-dns, propagation, memory.

Three measurements, each optional (``--only``):

qps
    The same zone of ``--names`` names (``svcN.netplug.internal``, one A record
    each) in netplug-dns (SQLite store, HTTP API and metrics on, upstream a dead
    loopback port), dnsmasq (a hosts file, ``--local=/netplug.internal/``) and
    aardvark-dns (a netavark-style config directory). One query file for all:
    90 % existing names, 10 % missing ones (NXDOMAIN everywhere), shuffled
    (``--missing 0``: every query a name that exists).
    dnsperf is the client. The server runs on ``--server-cpu``, dnsperf on
    ``--client-cpu`` (taskset). The servers take turns, ``--rounds`` rounds of
    ``--seconds`` each, and the table shows each server's median, with the
    server's CPU time per answered query (user + system, all its threads).
    aardvark-dns answers from a hash only for a client at a container's
    address. It is measured from a container's address and from another one.
propagation
    A 2-host netns-lab per store (SQLite, and etcd when the lab can start
    it). A client container runs on host1. For each sample, a container
    ``sN`` is started on host2, and ``dig +short @<host1 gateway>
    sN.lab.netplug.internal`` is polled from the client until it answers.
    Times are taken from the moment ``run_container`` returned, and from
    before it was called. Two probes help find where the time goes: a UDP
    probe in the client's namespace (one query every 2 ms, no process spawn),
    and a watch on the store (1 ms poll) that tells when the attachment was
    committed.
memory
    netplug-dns VmRSS for 0, 1,000 and 10,000 names, each in a fresh process:
    once the store is read, then after one pass of queries over every name,
    which fills the answer cache. Also while 10,000 names are PUT through
    the HTTP API into a running server.

Progress goes to stderr, and a Markdown table for the README to stdout
(``--json FILE`` writes every number as well). Needs root. Everything runs
inside network namespaces named ``npb-<random>-...`` on their loopback or
lab addresses. Every namespace, process and temporary directory it makes is
removed at the end, also on Ctrl-C. Every load run is bounded in time and
count.

    sudo .venv/bin/python bench/dns_bench.py
    sudo .venv/bin/python bench/dns_bench.py --only qps --rounds 5
    sudo .venv/bin/python bench/dns_bench.py --only propagation --samples 50 --store sqlite
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import random
import re
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from netplug.dns.records import Registration
from netplug.ipam.schema import Attachments, Names
from netplug.ipam.store.base import Put
from netplug.ipam.store.sqlite import SQLiteStore
from netplug.lab import namespaces
from netplug.lab.lab import Lab
from netplug.lab.namespaces import run
from netplug.net import netns

import harness
from harness import (
    Owned,
    describe_machine,
    dns_answered,
    dns_query,
    quantile,
    run_guarded,
    stamped_printer,
)

PARTS = ("qps", "propagation", "memory")
DOMAIN = "netplug.internal"
BIN = Path(sys.executable).parent
AARDVARK_PATHS = ("/usr/libexec/podman/aardvark-dns", "/usr/lib/podman/aardvark-dns")
# Inside the benchmark's own namespace: loopback for netplug-dns and dnsmasq, and
# two /32s on its lo for aardvark-dns (the network's gateway, and a container).
NETPLUG_ADDR, DNSMASQ_ADDR = "127.0.0.1", "127.0.0.2"
GATEWAY, CONTAINER = "10.89.0.1", "10.89.0.2"
NETPLUG_PORT, DNSMASQ_PORT, AARDVARK_PORT, HTTP_PORT = 5301, 5302, 5303, 8053
MEMORY_PORT, MEMORY_HTTP = 5310, 8054
DEAD_UPSTREAM = "127.0.0.1:9"  # nothing listens there: forwarding would SERVFAIL
START_TIMEOUT = 20.0
PROBE_INTERVAL = 0.002
BAR_QPS_RATIO = 0.95
BAR_P99_MS = 100.0
# A run during which other processes (or the hypervisor, as steal) took more than
# this share of the two pinned CPUs is flagged: its numbers are not the servers'.
BUSY_OTHERS = 0.10

say = stamped_printer(width=7)


def in_ns(ns: str, argv: list[str], cpu: int | None = None) -> list[str]:
    """``argv`` run inside namespace ``ns`` (pinned to ``cpu``); taskset and ip exec
    into it, so the PID of the process started is the program's own."""
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    return [*pin, "ip", "netns", "exec", ns, *argv]


def proc_status(pid: int, field_name: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of every thread of ``pid`` so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workspace(owned: Owned, name: str) -> tuple[Path, str]:
    """A temporary directory and a namespace, both called ``name``; the directory
    world-readable, for servers that read their files after dropping privileges."""
    tmp = owned.tempdir(name)
    tmp.chmod(0o755)
    return tmp, owned.namespace(name)


# -- the zone ------------------------------------------------------------------


def name_of(i: int) -> str:
    return f"svc{i}"


def address_of(i: int) -> str:
    return f"10.88.{i // 250}.{i % 250 + 2}"


def missing_of(i: int) -> str:
    return f"nx{i}"


def query_file(path: Path, names: int, missing_fraction: float, copies: int, seed: int) -> dict:
    """``copies`` queries per existing name plus as many missing names as make
    ``missing_fraction`` of the file, shuffled; returns the counts."""
    existing = names * copies
    missing = round(existing * missing_fraction / (1 - missing_fraction))
    lines = [f"{name_of(i)}.{DOMAIN} A" for i in range(names) for _ in range(copies)]
    lines += [f"{missing_of(i)}.{DOMAIN} A" for i in range(missing)]
    random.Random(seed).shuffle(lines)
    path.write_text("\n".join(lines) + "\n")
    return {"queries": len(lines), "existing": existing, "missing": missing}


def fill_store(url_path: Path, names: int) -> None:
    """``names`` API registrations, written as ``RegistryWriter.put`` writes a name
    without TTL (key ``/netplug/dns/NAME``, the registration's JSON), 500 a txn."""
    store = SQLiteStore(str(url_path))
    try:
        ops = [Put(Names.key(name_of(i)), registration(i).encode()) for i in range(names)]
        for start in range(0, len(ops), 500):
            store.txn([], ops[start : start + 500])
        store.status()
    finally:
        store.close()


def registration(i: int) -> Registration:
    return Registration(name_of(i), (IPv4Address(address_of(i)),))


# -- servers -------------------------------------------------------------------


@dataclass
class Server:
    label: str
    key: str
    address: str
    port: int
    pid: int
    source: str | None = None  # dnsperf's local address (-a)
    loop: str = ""
    note: str = ""


def dig(ns: str, server: str, port: int, qname: str, *extra: str, source: str | None = None):
    argv = ["dig", f"@{server}", "-p", str(port), "+tries=1", "+time=1", *extra, qname]
    if source:
        argv[1:1] = ["-b", source]
    done = run(*in_ns(ns, argv), check=False, timeout=10)
    return done.stdout.decode()


def wait_answers(ns: str, server: Server, timeout: float = START_TIMEOUT) -> None:
    """Until ``server`` answers the zone's first name with its address."""
    qname, want = f"{name_of(0)}.{DOMAIN}", address_of(0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = dig(ns, server.address, server.port, qname, "+short", source=server.source)
        if got.strip() == want:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{server.label} did not answer {qname} within {timeout:g} s")


def check_zone(ns: str, server: Server, names: int) -> None:
    """The last name answers with its address and a missing one is NXDOMAIN."""
    last = names - 1
    got = dig(
        ns, server.address, server.port, f"{name_of(last)}.{DOMAIN}", "+short", source=server.source
    )
    if got.strip() != address_of(last):
        raise RuntimeError(f"{server.label}: {name_of(last)} answered {got.strip()!r}")
    out = dig(ns, server.address, server.port, f"{missing_of(0)}.{DOMAIN}", source=server.source)
    if "status: NXDOMAIN" not in out:
        raise RuntimeError(f"{server.label}: a missing name did not get NXDOMAIN:\n{out}")


def event_loop_of(pid: int) -> str:
    """Which event loop a Python server runs: uvloop's extension mapped or not."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return "unknown"
    return "uvloop" if "/uvloop/" in maps else "asyncio"


def start_netplug(
    owned: Owned,
    ns: str,
    tmp: Path,
    names: int,
    cpu: int | None,
    port: int,
    http_port: int,
    tag: str,
) -> Server:
    db = tmp / f"{tag}.db"
    fill_store(db, names)
    argv = [
        str(BIN / "netplug-dns"),
        "--store", f"sqlite://{db}",
        "--listen", f"{NETPLUG_ADDR}:{port}",
        "--http", f"{NETPLUG_ADDR}:{http_port}",
        "--upstream", DEAD_UPSTREAM,
        "--domain", DOMAIN,
        "--ttl", "5",
        "--log-level", "WARNING",
    ]  # fmt: skip
    proc = owned.spawn(in_ns(ns, argv, cpu), tmp / f"{tag}.log")
    server = Server("netplug-dns", "netplug", NETPLUG_ADDR, port, proc.pid)
    try:
        wait_health(ns, http_port, names)
        if names:
            wait_answers(ns, server)
    except RuntimeError:
        say(f"netplug-dns log:\n{(tmp / f'{tag}.log').read_text()[-2000:]}")
        raise
    server.loop = event_loop_of(proc.pid)
    return server


def stop_server(owned: Owned, server: Server) -> None:
    """Stop ``server``, a process we started, by its PID."""
    owned.stop(next(p for p in owned.procs if p.pid == server.pid))


def http_connection(ns: str, port: int) -> http.client.HTTPConnection:
    """A connected HTTP connection to netplug-dns's API inside ``ns`` (the socket
    is made in the namespace; using it afterwards needs no namespace)."""
    conn = http.client.HTTPConnection(NETPLUG_ADDR, port, timeout=10)
    with netns.entered(namespaces.path(ns)):
        conn.connect()
    return conn


def health(ns: str, port: int) -> dict:
    conn = http_connection(ns, port)
    try:
        conn.request("GET", "/healthz")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def wait_health(ns: str, port: int, names: int, timeout: float = START_TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = health(ns, port)
            if last.get("names") == names and last.get("store") == "up":
                return last
        except (OSError, ValueError, http.client.HTTPException) as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"netplug-dns /healthz did not show {names} names: {last}")


def start_dnsmasq(owned: Owned, ns: str, tmp: Path, names: int, cpu: int | None) -> Server:
    hosts = tmp / "dnsmasq.hosts"
    hosts.write_text("".join(f"{address_of(i)} {name_of(i)}.{DOMAIN}\n" for i in range(names)))
    hosts.chmod(0o644)
    tmp.chmod(0o755)  # dnsmasq reads it after dropping privileges (on SIGHUP)
    argv = [
        "dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        f"--addn-hosts={hosts}",
        f"--listen-address={DNSMASQ_ADDR}",
        f"--port={DNSMASQ_PORT}",
        "--bind-interfaces",
        f"--local=/{DOMAIN}/",
        "--local-ttl=5",
        f"--pid-file={tmp / 'dnsmasq.pid'}",
    ]
    proc = owned.spawn(in_ns(ns, argv, cpu), tmp / "dnsmasq.log")
    server = Server("dnsmasq", "dnsmasq", DNSMASQ_ADDR, DNSMASQ_PORT, proc.pid)
    wait_answers(ns, server)
    return server


def aardvark_binary(given: str | None) -> str | None:
    for path in (given, shutil.which("aardvark-dns"), *AARDVARK_PATHS):
        if path and os.access(path, os.X_OK):
            return path
    return None


def start_aardvark(
    owned: Owned, ns: str, tmp: Path, names: int, cpu: int | None, binary: str
) -> tuple[Server, Server]:
    """aardvark-dns on GATEWAY, configured as netavark would for a network
    ``bench`` holding one container per name, named ``svcN.netplug.internal``
    (dots are allowed in container names), and the client container at
    CONTAINER. A client at a container's address gets a hash lookup of the
    whole name; any other client, and a missing name from anyone, a scan of
    every name of the network. It forks: the child's PID comes from the
    ``aardvark.pid`` it writes into its config directory."""
    config = tmp / "aardvark"
    config.mkdir()
    lines = [GATEWAY, f"{'c' * 64} {CONTAINER}  client"]
    lines += [f"{i:064x} {address_of(i)}  {name_of(i)}.{DOMAIN}" for i in range(names)]
    (config / "bench").write_text("\n".join(lines) + "\n")
    argv = [
        binary, "--config", str(config), "-p", str(AARDVARK_PORT), "run",
    ]  # fmt: skip
    # No forwarding: every name it does not hold gets NXDOMAIN (the namespace has
    # no way out anyway).
    env = {**os.environ, "AARDVARK_NO_PROXY": "1"}
    parent = owned.spawn(in_ns(ns, argv, cpu), tmp / "aardvark.log", env=env)
    with contextlib.suppress(subprocess.TimeoutExpired):  # the parent waits for the child
        parent.wait(timeout=START_TIMEOUT)
    pid = adopt_aardvark(owned, config)  # before any error: a child that forked gets stopped
    if parent.returncode != 0 or pid is None:
        log = (tmp / "aardvark.log").read_text()[-1000:]
        raise RuntimeError(f"aardvark-dns run returned {parent.returncode}: {log}")
    from_container = Server(
        "aardvark-dns, client at a container's address",
        "aardvark",
        GATEWAY,
        AARDVARK_PORT,
        pid,
        source=CONTAINER,
    )
    from_other = Server(
        "aardvark-dns, client at another address",
        "aardvark-other",
        GATEWAY,
        AARDVARK_PORT,
        pid,
        source=GATEWAY,
    )
    wait_answers(ns, from_container)
    return from_container, from_other


def adopt_aardvark(owned: Owned, config: Path) -> int | None:
    """The PID in ``config``/aardvark.pid, recorded for the cleanup if it is the
    aardvark-dns we started (its command line names our config directory)."""
    try:
        pid = int((config / "aardvark.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if str(config).encode() not in cmdline:  # not ours: never touch it
        return None
    owned.adopt(pid)
    return pid


# -- dnsperf -------------------------------------------------------------------

DNSPERF_FIELDS = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
    "qps": r"Queries per second:\s+([\d.]+)",
    "latency_s": r"Average Latency \(s\):\s+([\d.]+)",
    "run_s": r"Run time \(s\):\s+([\d.]+)",
}


def dnsperf(
    ns: str,
    server: Server,
    qfile: Path,
    args: argparse.Namespace,
    seconds: float | None = None,
    passes: int | None = None,
) -> dict[str, Any]:
    argv = [
        "dnsperf", "-s", server.address, "-p", str(server.port), "-d", str(qfile),
        "-c", str(args.clients), "-q", str(args.outstanding), "-T", str(args.threads),
        "-t", "2",
    ]  # fmt: skip
    if seconds is not None:
        argv += ["-l", f"{seconds:g}"]
    if passes is not None:
        argv += ["-n", str(passes)]
    if server.source:
        argv += ["-a", server.source]
    limit = (seconds or 60) + 30
    pinned = sorted({args.server_cpu, args.client_cpu})
    server_cpu0 = cpu_seconds(server.pid)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = cpu_busy(pinned)
    wall0 = time.monotonic()
    done = run(*in_ns(ns, argv, args.client_cpu), check=False, timeout=limit)
    wall = time.monotonic() - wall0
    busy1 = cpu_busy(pinned)
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu1 = cpu_seconds(server.pid)
    out = done.stdout.decode()
    if done.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({done.returncode}): {out[-500:]}{done.stderr[-500:]}")
    result: dict[str, Any] = {}
    for name, pattern in DNSPERF_FIELDS.items():
        match = re.search(pattern, out)
        result[name] = float(match.group(1)) if match else None
    codes = re.search(r"Response codes:\s+(.*)", out)
    result["rcodes"] = (
        dict((code, int(count)) for code, count in re.findall(r"([A-Z]+) (\d+)", codes.group(1)))
        if codes
        else {}
    )
    client_cpu = (children1.ru_utime + children1.ru_stime) - (
        children0.ru_utime + children0.ru_stime
    )
    result["client_cpu"] = client_cpu / wall if wall else None
    result["server_cpu"] = result["server_us_per_query"] = None
    if server_cpu0 is not None and server_cpu1 is not None:
        result["server_cpu"] = (server_cpu1 - server_cpu0) / wall
        if result["completed"]:
            result["server_us_per_query"] = (server_cpu1 - server_cpu0) / result["completed"] * 1e6
    ours = client_cpu + (result["server_cpu"] or 0) * wall
    result["cpu_seconds"] = {"pinned_busy": busy1 - busy0, "ours": ours, "wall": wall}
    result["others_cpu"] = max(0.0, (busy1 - busy0 - ours) / wall / len(pinned))
    return result


def qps(owned: Owned, args: argparse.Namespace) -> dict[str, Any]:
    say(f"QPS: {args.names} names, {args.rounds} rounds of {args.seconds} s per server")
    tmp, ns = workspace(owned, "qps")
    run("ip", "-n", ns, "addr", "add", f"{GATEWAY}/32", "dev", "lo")
    run("ip", "-n", ns, "addr", "add", f"{CONTAINER}/32", "dev", "lo")
    qfile = tmp / "queries.txt"
    counts = query_file(qfile, args.names, args.missing, 9, seed=1)
    qfile.chmod(0o644)
    say(f"  query file: {counts['queries']} queries, {counts['missing']} of them missing names")
    results: dict[str, Any] = {"queries": counts, "servers": {}, "dnsperf": dnsperf_args(args)}
    servers: list[Server] = []
    cpu = args.server_cpu
    np = start_netplug(owned, ns, tmp, args.names, cpu, NETPLUG_PORT, HTTP_PORT, "netplug")
    say(f"  netplug-dns pid {np.pid} on {np.address}:{np.port}, event loop: {np.loop}")
    servers.append(np)
    dm = start_dnsmasq(owned, ns, tmp, args.names, cpu)
    say(f"  dnsmasq pid {dm.pid} on {dm.address}:{dm.port}")
    servers.append(dm)
    binary = aardvark_binary(args.aardvark)
    if binary is None:
        results["aardvark_error"] = "no aardvark-dns binary found"
        say("  aardvark-dns: not found; its rows are n/a")
    else:
        try:
            av, av_other = start_aardvark(owned, ns, tmp, args.names, cpu, binary)
            say(f"  aardvark-dns ({binary}) pid {av.pid} on {GATEWAY}:{AARDVARK_PORT}")
            servers += [av, av_other]
        except (RuntimeError, OSError, ValueError) as e:
            results["aardvark_error"] = str(e)
            say(f"  aardvark-dns could not be run: {e}; its rows are n/a")
    for server in servers:
        check_zone(ns, server, args.names)
        results["servers"][server.key] = {
            "label": server.label, "pid": server.pid, "loop": server.loop, "runs": [],
        }  # fmt: skip
    say("  every server answers the zone and NXDOMAINs a missing name")
    say("  warm-up: one pass of the query file each")
    for server in servers:
        dnsperf(ns, server, qfile, args, passes=1)
    for r in range(args.rounds):
        order = servers[r % len(servers) :] + servers[: r % len(servers)]
        for server in order:
            result = dnsperf(ns, server, qfile, args, seconds=args.seconds)
            results["servers"][server.key]["runs"].append(result)
            say(
                f"  round {r + 1}/{args.rounds} {server.label}: {result['qps']:,.0f} QPS, "
                f"lost {result['lost']:.0f}, server CPU {fmt_pct(result.get('server_cpu'))} "
                f"({fmt_us(result['server_us_per_query'])}/query), "
                f"dnsperf CPU {fmt_pct(result['client_cpu'])}, rcodes {result['rcodes']}"
                + f", others {fmt_pct(result['others_cpu'])} of the 2 CPUs"
                + (" (disturbed)" if disturbed(result) else "")
            )
    for server in servers:
        entry = results["servers"][server.key]
        entry["rss_kib"] = proc_status(server.pid, "VmRSS")
        runs = entry["runs"]
        entry["median_qps"] = statistics.median(run["qps"] for run in runs)
        entry["server_cpu"] = statistics.median(run.get("server_cpu") or 0 for run in runs)
        entry["server_us_per_query"] = statistics.median(
            run.get("server_us_per_query") or 0 for run in runs
        )
        entry["client_cpu"] = statistics.median(run["client_cpu"] or 0 for run in runs)
        total = sum(sum(run["rcodes"].values()) for run in runs) or 1
        entry["nxdomain_share"] = sum(run["rcodes"].get("NXDOMAIN", 0) for run in runs) / total
        entry["lost"] = sum(run["lost"] or 0 for run in runs)
    base = results["servers"]["dnsmasq"]["median_qps"]
    reference = results["servers"]["dnsmasq"]["runs"]
    for entry in results["servers"].values():
        entry["ratio_dnsmasq"] = entry["median_qps"] / base if base else None
        # Each round's ratio to dnsmasq in that round: the runs of one round are
        # adjacent, so this is less sensitive to load that comes and goes.
        entry["ratio_dnsmasq_paired"] = statistics.median(
            run["qps"] / ref["qps"] for run, ref in zip(entry["runs"], reference, strict=True)
        )
        entry["disturbed_runs"] = sum(1 for run in entry["runs"] if disturbed(run))
    return results


def disturbed(run: dict[str, Any]) -> bool:
    """Other processes took a good share of the pinned CPUs during the run."""
    return (run.get("others_cpu") or 0) > BUSY_OTHERS


def cpu_busy(cpus: list[int]) -> float:
    """Seconds the CPUs spent on user, nice, system and steal time so far."""
    wanted = {f"cpu{c}" for c in cpus}
    busy = 0
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] in wanted:
            user, nice, system, steal = (int(fields[i]) for i in (1, 2, 3, 8))
            busy += user + nice + system + steal
    return busy / os.sysconf("SC_CLK_TCK")


def dnsperf_args(args: argparse.Namespace) -> str:
    return (
        f"dnsperf -l {args.seconds:g} -c {args.clients} -q {args.outstanding} -T {args.threads}, "
        f"server on CPU {args.server_cpu}, dnsperf on CPU {args.client_cpu}"
    )


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def fmt_us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} µs"


# -- propagation ---------------------------------------------------------------


class Prober(threading.Thread):
    """Queries ``qname`` from a UDP socket made in the client's namespace every
    PROBE_INTERVAL until an answer with a record arrives (``answered``, monotonic)."""

    def __init__(self, sock: socket.socket, server: str, qname: str, deadline: float) -> None:
        super().__init__(daemon=True)
        self.sock, self.server, self.qname, self.deadline = sock, server, qname, deadline
        self.answered: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while select.select([self.sock], [], [], 0)[0]:  # stale replies of a past sample
            self.sock.recv(4096)
        qid = random.randrange(1 << 16)
        query = dns_query(self.qname, qid)
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            self.sock.sendto(query, (self.server, 53))
            until = time.monotonic() + PROBE_INTERVAL
            while (left := until - time.monotonic()) > 0:
                if not select.select([self.sock], [], [], left)[0]:
                    break
                if dns_answered(self.sock.recv(4096), qid):
                    self.answered = time.monotonic()
                    return


class Committed(threading.Thread):
    """Watches the lab's store and notes when each attachment key first appears
    (monotonic): the moment the ADD's write became visible."""

    def __init__(self, open_watch: Callable[[], contextlib.AbstractContextManager]) -> None:
        super().__init__(daemon=True)
        self.open_watch = open_watch
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.open_watch() as watch:
                self.ready.set()
                for batch in watch:
                    now = time.monotonic()
                    if self.stop.is_set():
                        return
                    for event in batch:
                        if event.type == "put":
                            self.seen.setdefault(event.kv.key, now)
        except BaseException as e:  # reported, never fatal to the run
            self.error = e
            self.ready.set()

    def when(self, container: str) -> float | None:
        for key, at in list(self.seen.items()):
            if f"/{container}/" in key:
                return at
        return None


def store_watch(lab: Lab, kind: str) -> Callable[[], contextlib.AbstractContextManager]:
    prefix = Attachments.PREFIX

    @contextlib.contextmanager
    def sqlite_watch() -> Iterator[Iterator]:
        url = lab.state.load()["store"]
        store = SQLiteStore(url.removeprefix("sqlite://"), poll_interval=0.001)
        watch = store.watch(prefix, 0, 0.2)
        try:
            yield watch
        finally:
            watch.close()
            store.close()

    @contextlib.contextmanager
    def lab_watch() -> Iterator[Iterator]:
        with lab.store() as store:  # this thread stays in the fabric namespace
            watch = store.watch(prefix, 0, 0.2)
            try:
                yield watch
            finally:
                with contextlib.suppress(Exception):
                    watch.close()

    return sqlite_watch if kind == "sqlite" else lab_watch


def dig_argv(ns: str, server: str, qname: str) -> list[str]:
    """dig in the namespace ``ns`` (nsenter: a plain setns, cheaper than ip netns exec)."""
    return [
        "nsenter", f"--net={namespaces.path(ns)}",
        "dig", f"@{server}", "+short", "+tries=1", "+time=1", qname,
    ]  # fmt: skip


def dig_until(ns: str, server: str, qname: str, deadline: float) -> tuple[float | None, int]:
    """Poll ``dig +short`` from ``ns`` until it prints an address; (when, digs)."""
    argv = dig_argv(ns, server, qname)
    digs = 0
    while time.monotonic() < deadline:
        done = subprocess.run(argv, capture_output=True, timeout=10)
        digs += 1
        if done.stdout.strip():
            return time.monotonic(), digs
    return None, digs


def dig_cost(ns: str, server: str, qname: str, count: int) -> dict[str, float]:
    """How long one dig of a name that answers takes, start to exit."""
    argv = dig_argv(ns, server, qname)
    took = []
    for _ in range(count):
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, timeout=10)
        took.append(time.monotonic() - started)
        if not done.stdout.strip():
            raise RuntimeError(f"dig {qname} from {ns} did not answer")
    return {"p50": quantile(took, 0.5), "p99": quantile(took, 0.99), "max": max(took), "n": count}


def propagation(owned: Owned, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    say(f"propagation on {kind}: a 2-host lab, {args.samples} samples")
    lab = owned.lab(f"p{kind[:2]}")
    result: dict[str, Any] = {"store": kind}
    try:
        lab.up(2, kind)
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
        say(f"  Lab.up(2, {kind!r}) failed: {e}; n/a")
        owned.drop_lab(lab)
        return result
    committed: Committed | None = None
    sock: socket.socket | None = None
    try:
        address = lab.run_container("host1", "client").split("/")[0]
        gateway = address.rsplit(".", 1)[0] + ".1"
        client_ns = lab.container_netns("client")
        say(f"  client {address} on host1, asking {gateway}")
        deadline = time.monotonic() + START_TIMEOUT
        when, _ = dig_until(client_ns, gateway, f"client.lab.{DOMAIN}", deadline)
        if when is None:
            raise RuntimeError(f"host1's DNS on {gateway} never answered client.lab.{DOMAIN}")
        result["dig_alone_s"] = dig_cost(client_ns, gateway, f"client.lab.{DOMAIN}", 30)
        say(
            f"  one dig alone (spawn to exit): p50 {ms(result['dig_alone_s']['p50'])}, "
            f"p99 {ms(result['dig_alone_s']['p99'])}"
        )
        with netns.entered(namespaces.path(client_ns)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        committed = Committed(store_watch(lab, kind))
        committed.start()
        committed.ready.wait(10)
        samples: list[dict[str, Any]] = []
        stop_at = time.monotonic() + args.propagation_seconds
        for i in range(args.samples):
            if time.monotonic() > stop_at:
                say(f"  time budget spent after {i} samples")
                break
            name = f"s{i}"
            qname = f"{name}.lab.{DOMAIN}"
            probe = Prober(sock, gateway, qname, time.monotonic() + args.sample_timeout + 30)
            probe.start()
            called = time.monotonic()
            lab.run_container("host2", name)
            returned = time.monotonic()
            answered, digs = dig_until(client_ns, gateway, qname, returned + args.sample_timeout)
            probe.join(timeout=args.sample_timeout)
            probe.stop.set()
            probe.join(timeout=2)
            commit = committed.when(name)
            sample = {
                "add_s": returned - called,
                "dig_from_return_s": None if answered is None else answered - returned,
                "dig_from_call_s": None if answered is None else answered - called,
                "digs": digs,
                "probe_from_call_s": None if probe.answered is None else probe.answered - called,
                "probe_from_return_s": (
                    None if probe.answered is None else probe.answered - returned
                ),
                "commit_from_call_s": None if commit is None else commit - called,
                "probe_from_commit_s": (
                    None if commit is None or probe.answered is None else probe.answered - commit
                ),
            }
            samples.append(sample)
            lab.remove_container(name)
            if answered is None:
                say(f"  sample {i}: no answer within {args.sample_timeout:g} s")
            if (i + 1) % 20 == 0 or i == 0:
                say(
                    f"  sample {i + 1}/{args.samples}: ADD {sample['add_s'] * 1000:.0f} ms, "
                    f"dig answered {ms(sample['dig_from_return_s'])} after return "
                    f"({digs} digs), probe {ms(sample['probe_from_commit_s'])} after commit"
                )
        result["samples"] = samples
        result.update(summarise(samples))
        if committed.error is not None:
            result["watch_error"] = repr(committed.error)
    finally:
        if committed is not None:
            committed.stop.set()
            committed.join(timeout=3)
        if sock is not None:
            sock.close()
        owned.drop_lab(lab)
    return result


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.1f} ms"


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"count": len(samples)}
    for key in (
        "add_s", "dig_from_return_s", "dig_from_call_s", "probe_from_call_s",
        "probe_from_return_s", "commit_from_call_s", "probe_from_commit_s", "digs",
    ):  # fmt: skip
        values = [s[key] for s in samples if s[key] is not None]
        out[key] = (
            {"p50": quantile(values, 0.5), "p99": quantile(values, 0.99), "max": max(values),
             "n": len(values)}
            if values
            else None
        )  # fmt: skip
    out["unanswered"] = sum(1 for s in samples if s["dig_from_return_s"] is None)
    # The probe had its answer before run_container returned: the rest of the ADD
    # (after its store write) outlasts the propagation itself.
    out["answered_before_return"] = sum(
        1 for s in samples if s["probe_from_return_s"] is not None and s["probe_from_return_s"] <= 0
    )
    return out


# -- memory --------------------------------------------------------------------


def memory(owned: Owned, args: argparse.Namespace) -> dict[str, Any]:
    say(f"memory: netplug-dns VmRSS with {', '.join(map(str, args.memory_names))} names")
    tmp, ns = workspace(owned, "mem")
    results: dict[str, Any] = {"fresh": [], "api": None}
    for names in args.memory_names:
        server = start_netplug(
            owned, ns, tmp, names, args.server_cpu, MEMORY_PORT, MEMORY_HTTP, f"mem{names}"
        )
        time.sleep(0.5)
        entry = {
            "names": names,
            "rss_kib": proc_status(server.pid, "VmRSS"),
            "loop": server.loop,
        }
        if names:
            qfile = tmp / f"q{names}.txt"
            query_file(qfile, names, 0.1, 1, seed=2)
            qfile.chmod(0o644)
            run_ = dnsperf(ns, server, qfile, args, passes=1)
            entry["queried"] = run_["completed"]
        entry["rss_after_queries_kib"] = proc_status(server.pid, "VmRSS")
        entry["hwm_kib"] = proc_status(server.pid, "VmHWM")
        results["fresh"].append(entry)
        say(
            f"  {names} names: VmRSS {kib(entry['rss_kib'])} after start, "
            f"{kib(entry['rss_after_queries_kib'])} after a query pass"
        )
        stop_server(owned, server)
    if args.api_names:
        results["api"] = api_growth(owned, args, ns, tmp)
    return results


def api_growth(owned: Owned, args: argparse.Namespace, ns: str, tmp: Path) -> dict[str, Any]:
    """PUT ``--api-names`` names one by one into a running, empty netplug-dns."""
    target = args.api_names
    say(f"  PUT {target} names through the HTTP API into a running netplug-dns")
    server = start_netplug(owned, ns, tmp, 0, args.server_cpu, MEMORY_PORT, MEMORY_HTTP, "api")
    marks = sorted({m for m in (1000, target) if m <= target})
    out: dict[str, Any] = {"names": target, "rss_kib": {}, "put_seconds": None}
    conn = http_connection(ns, MEMORY_HTTP)
    started = time.monotonic()
    stop_at = started + args.api_seconds
    try:
        for i in range(target):
            if time.monotonic() > stop_at:
                out["stopped_at"] = i
                say(f"  API: time budget spent after {i} PUTs")
                break
            body = json.dumps({"addresses": [address_of(i)]})
            conn.request(
                "PUT", f"/v1/names/{name_of(i)}", body, {"Content-Type": "application/json"}
            )
            reply = conn.getresponse()
            reply.read()
            if reply.status != 200:
                raise RuntimeError(f"PUT {name_of(i)}: HTTP {reply.status}")
            if i + 1 in marks:
                put_done = time.monotonic()
                settled = wait_health(ns, MEMORY_HTTP, i + 1, timeout=60)
                out["rss_kib"][i + 1] = proc_status(server.pid, "VmRSS")
                say(
                    f"  API: {i + 1} names PUT in {put_done - started:.1f} s, served after "
                    f"{time.monotonic() - put_done:.2f} s more (revision {settled['revision']}), "
                    f"VmRSS {kib(out['rss_kib'][i + 1])}"
                )
        out["put_seconds"] = time.monotonic() - started
    finally:
        conn.close()
    out["hwm_kib"] = proc_status(server.pid, "VmHWM")
    stop_server(owned, server)
    return out


def kib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1024:.1f} MiB"


# -- report --------------------------------------------------------------------


def table(results: dict[str, Any], args: argparse.Namespace) -> Iterator[str]:
    yield "| Measurement | Result | Bar |"
    yield "| --- | --- | --- |"
    q = results.get("qps")
    if q:
        servers = q["servers"]
        np, dm = servers.get("netplug"), servers.get("dnsmasq")
        mix = f"{round(100 * q['queries']['existing'] / q['queries']['queries'])} % existing names"
        yield (
            f"| QPS ({mix}), dnsmasq {dnsmasq_version()} | {dm['median_qps']:,.0f} (server CPU "
            f"{fmt_pct(dm['server_cpu'])}, {fmt_us(dm['server_us_per_query'])}/query; dnsperf "
            f"CPU {fmt_pct(dm['client_cpu'])}) | reference |"
        )
        ok = np["ratio_dnsmasq"] >= BAR_QPS_RATIO
        yield (
            f"| QPS ({mix}), netplug-dns (UDP in batches on a thread, {np['loop']} for the rest; "
            "SQLite store, HTTP API, metrics) | "
            f"{qps_cell(np)} | ≥ {BAR_QPS_RATIO}x dnsmasq: {'met' if ok else 'missed'} |"
        )
        for key in ("aardvark", "aardvark-other"):
            entry = servers.get(key)
            if entry:
                yield f"| QPS, {entry['label']} ({aardvark_version()}) | {qps_cell(entry)} | |"
            elif key == "aardvark":
                yield f"| QPS, aardvark-dns | n/a: {q.get('aardvark_error', '')} | |"
        rss = ", ".join(
            f"{entry['label'].split(',')[0]} {kib(entry['rss_kib'])}"
            for key, entry in servers.items()
            if key != "aardvark-other"
        )
        yield f"| VmRSS after the QPS rounds ({args.names} names) | {rss} | |"
    for prop in results.get("propagation", []):
        store = "SQLite" if prop["store"] == "sqlite" else prop["store"]
        if "error" in prop:
            yield f"| Propagation, {store} | n/a: {prop['error'][:120]} | p99 < 100 ms |"
            continue
        d_ret, d_call = prop["dig_from_return_s"], prop["dig_from_call_s"]
        probe, commit = prop["probe_from_commit_s"], prop["commit_from_call_s"]
        ok = d_ret is not None and d_ret["p99"] * 1000 < BAR_P99_MS
        yield (
            f"| Propagation, {store}: ADD returned → dig answers on the other host, "
            f"{prop['count']} samples | p50 {ms(pct(d_ret, 'p50'))}, p99 "
            f"{ms(pct(d_ret, 'p99'))} | p99 < {BAR_P99_MS:.0f} ms: {'met' if ok else 'missed'} |"
        )
        yield (
            f"| Propagation, {store}: before ADD → dig answers | p50 {ms(pct(d_call, 'p50'))}, "
            f"p99 {ms(pct(d_call, 'p99'))} (ADD itself p50 {ms(pct(prop['add_s'], 'p50'))}) | |"
        )
        alone = prop.get("dig_alone_s")
        yield (
            f"| Propagation, {store}: where the time goes | store commit → answered (UDP "
            f"probe every 2 ms) p50 {ms(pct(probe, 'p50'))}, p99 {ms(pct(probe, 'p99'))}; "
            f"commit p50 {ms(pct(commit, 'p50'))} into the ADD; answered before the ADD "
            f"returned in {prop['answered_before_return']}/{prop['count']} "
            f"({latest(prop['probe_from_return_s'])}); one dig alone "
            f"p50 {ms(pct(alone, 'p50'))}, p99 {ms(pct(alone, 'p99'))} | |"
        )
    mem = results.get("memory")
    if mem:
        cells = "; ".join(
            f"{e['names']:,} names: {kib(e['rss_kib'])} ({kib(e['rss_after_queries_kib'])} "
            f"after a query pass)"
            for e in mem["fresh"]
        )
        yield f"| netplug-dns VmRSS, fresh process | {cells} | |"
        api = mem.get("api")
        if api and api["rss_kib"]:
            cells = ", ".join(f"{n:,} names {kib(v)}" for n, v in api["rss_kib"].items())
            rate = len(api["rss_kib"]) and max(api["rss_kib"]) / api["put_seconds"]
            yield (
                f"| netplug-dns VmRSS, names PUT one by one through the API | {cells} "
                f"({rate:,.0f} PUT/s) | |"
            )


def qps_cell(entry: dict[str, Any]) -> str:
    disturbed_runs = entry["disturbed_runs"]
    return (
        f"{entry['median_qps']:,.0f} = {entry['ratio_dnsmasq']:.2f}x dnsmasq (per round "
        f"{entry['ratio_dnsmasq_paired']:.2f}x; server CPU {fmt_pct(entry['server_cpu'])}, "
        f"{fmt_us(entry['server_us_per_query'])}/query"
        + (f"; {disturbed_runs} run(s) disturbed by other load" if disturbed_runs else "")
        + ")"
    )


def latest(from_return: dict | None) -> str:
    """The latest probe answer, relative to the moment the ADD returned."""
    if from_return is None:
        return "no probe answer"
    worst = from_return["max"]
    side = "before" if worst <= 0 else "after"
    return f"the latest {ms(abs(worst))} {side} it returned"


def pct(entry: dict | None, key: str) -> float | None:
    return None if entry is None else entry[key]


def dnsmasq_version() -> str:
    out = run("dnsmasq", "--version", check=False).stdout.decode()
    match = re.search(r"version (\S+)", out)
    return match.group(1) if match else "?"


def aardvark_version() -> str:
    binary = aardvark_binary(None)
    if binary is None:
        return "?"
    out = run(binary, "--version", check=False).stdout.decode().split()
    return out[-1] if out else "?"


def machine() -> str:
    perf = run("dnsperf", "-h", check=False)
    version = re.search(r"Version (\S+)", (perf.stdout + perf.stderr).decode())
    tools = f"Python {platform.python_version()}, dnsperf {version.group(1) if version else '?'}"
    return describe_machine(tools, 0.5, say)


# -- main ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    needs = "root, dnsperf, dig, dnsmasq, taskset (and aardvark-dns for its rows)"
    parser = harness.bench_parser(__doc__, needs, PARTS)
    parser.add_argument("--names", type=int, default=1000, help="names in the zone (1000)")
    parser.add_argument(
        "--missing",
        type=float,
        default=0.1,
        help="share of QPS queries for missing names (0.1); 0: every query answers",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--seconds", type=float, default=10, help="dnsperf -l per run (10)")
    parser.add_argument("--clients", type=int, default=8, help="dnsperf -c (8)")
    parser.add_argument("--outstanding", type=int, default=200, help="dnsperf -q (200)")
    parser.add_argument("--threads", type=int, default=1, help="dnsperf -T (1)")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU of the servers (0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU of dnsperf (1)")
    parser.add_argument("--aardvark", metavar="PATH", help="aardvark-dns binary (found if unset)")
    parser.add_argument("--samples", type=int, default=200, help="propagation samples (200)")
    parser.add_argument(
        "--store",
        action="append",
        choices=["sqlite", "etcd"],
        help="propagation store, repeatable (default: sqlite and etcd)",
    )
    parser.add_argument(
        "--sample-timeout", type=float, default=5.0, help="give up on a sample after (5 s)"
    )
    parser.add_argument(
        "--propagation-seconds",
        type=float,
        default=900,
        help="time budget per store; fewer samples when spent (900)",
    )
    parser.add_argument(
        "--memory-names",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[0, 1000, 10000],
        help="name counts for memory, comma-separated (0,1000,10000)",
    )
    parser.add_argument(
        "--api-names", type=int, default=10000, help="names PUT through the API; 0: skip (10000)"
    )
    parser.add_argument(
        "--api-seconds", type=float, default=300, help="time budget for the API PUTs (300)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    args = parser.parse_args(argv)
    args.only = args.only or list(PARTS)
    args.store = list(dict.fromkeys(args.store or ["sqlite", "etcd"]))
    if not 1 <= args.names <= 50_000 or not 1 <= args.rounds <= 20:
        parser.error("--names must be 1..50000 and --rounds 1..20")
    if not 0 <= args.missing <= 0.5:
        parser.error("--missing must be 0..0.5")
    if not 1 <= args.seconds <= 120:
        parser.error("--seconds must be 1..120")
    if not 1 <= args.samples <= 2000 or not 0 < args.sample_timeout <= 30:
        parser.error("--samples must be 1..2000 and --sample-timeout up to 30")
    if any(not 0 <= n <= 100_000 for n in args.memory_names) or not 0 <= args.api_names <= 100_000:
        parser.error("--memory-names and --api-names must be 0..100000")
    cpus = os.cpu_count() or 1
    if not (0 <= args.server_cpu < cpus and 0 <= args.client_cpu < cpus):
        parser.error(f"CPUs must be 0..{cpus - 1}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not harness.needs_root("dns_bench"):
        return 2
    owned = Owned(say)
    results: dict[str, Any] = {"machine": machine(), "tag": owned.tag, "args": vars(args)}

    def measure() -> None:
        if "qps" in args.only:
            results["qps"] = qps(owned, args)
        if "propagation" in args.only:
            results["propagation"] = [propagation(owned, args, kind) for kind in args.store]
        if "memory" in args.only:
            results["memory"] = memory(owned, args)

    if not run_guarded(measure, owned.release, say):
        return 130
    extra = f"; {results['qps']['dnsperf']}" if "qps" in results else ""
    measured_on = f"{results['machine']}{extra}"
    return harness.report(table(results, args), measured_on, "dns_bench.py", args.json, results)


if __name__ == "__main__":
    sys.exit(main())
