"""Scale benchmark (issue 12): convergence of a new container at 3, 10 (and 40) hosts.

One netns-lab per size (``--hosts 3,10``), all up at once, each with
``--per-host`` containers on every host (``netns-lab run --count``). Then the
samples are interleaved across the labs (one lab's sample, the next lab's, and
so on: the labs share this noisy 2-core box, so each sees the same noise). A
sample ADDs one new container on one host (round robin) and times, from the
moment the ADD returns, until a container on *every other* host both pings it
and resolves its name through its own host's DNS (its gateway): that host's
agent has programmed the overlay peer and the name. Reported per size: p50 and
p99 of that time, ADD time, and what probing alone costs (the same probes once
more, after convergence). Also per size: agent RSS and idle CPU per agent
(``--idle-seconds`` of quiet after setup, from /proc), and how long ``up`` and
the containers took.

Progress goes to stderr; a Markdown table for the README goes to stdout
(``--json FILE`` writes every number). Needs root, ping; everything it makes is
a namespace named ``npb-<random>-...``, removed at the end, also on Ctrl-C.

    sudo .venv/bin/python bench/scale_bench.py --hosts 3,10 --per-host 25 --samples 50
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import ip_interface
from pathlib import Path
from typing import Any

from netplug.lab import namespaces
from netplug.lab.lab import Lab
from netplug.net import netns

from harness import Owned, describe_machine, quantile, run_guarded, stamped_printer

BAR_P99_S = 1.0
BAR_GROWTH = 2.0
DNS_PORT = 53
PROBE_INTERVAL = 0.01

say = stamped_printer(width=6)


@dataclass
class Size:
    """One lab of ``hosts`` hosts, and what was measured on it."""

    hosts: int
    lab: Lab
    store: str = ""
    # host -> (a container's namespace, its gateway: the host's DNS)
    sources: dict[str, tuple[str, str]] = field(default_factory=dict)
    setup: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    agents: dict[str, Any] = field(default_factory=dict)


# -- probes ----------------------------------------------------------------------


def dns_query(qname: str, qid: int) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in qname.split("."))
    return header + labels + b"\0" + struct.pack("!HH", 1, 1)


def resolves(sock: socket.socket, server: str, qname: str, address: str, until: float) -> bool:
    """Query ``qname`` every PROBE_INTERVAL until an answer carries ``address``."""
    want = socket.inet_aton(address)
    qid = random.randrange(1 << 16)
    while time.monotonic() < until:
        qid = (qid + 1) & 0xFFFF
        sock.sendto(dns_query(qname, qid), (server, DNS_PORT))
        answer_by = time.monotonic() + PROBE_INTERVAL
        while (left := answer_by - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                reply = sock.recv(512)
            except TimeoutError:
                break
            if reply[:2] == struct.pack("!H", qid) and want in reply[12:]:
                return True
    return False


def pings(netns_name: str, address: str, timeout: float) -> bool:
    """One ping process probing every 10 ms until the first reply (or ``timeout``)."""
    argv = ["ip", "netns", "exec", netns_name, "ping", "-n", "-q", "-c", "1", "-i", "0.01"]
    done = subprocess.run(
        [*argv, "-w", str(max(1, int(timeout))), address],
        capture_output=True,
        timeout=timeout + 5,
    )
    return done.returncode == 0


def converge(size: Size, new_host: str, name: str, address: str, timeout: float) -> list:
    """Seconds until each other host's source pings ``address`` and resolves ``name``
    (None for a source that did not within ``timeout``)."""
    start = time.monotonic()
    until = start + timeout

    def probe(source: tuple[str, str]) -> float | None:
        where, gateway = source
        with netns.entered(namespaces.path(where)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            if not resolves(sock, gateway, f"{name}.lab.netplug.internal", address, until):
                return None
        if not pings(where, address, until - time.monotonic()):
            return None
        return time.monotonic() - start

    others = [source for host, source in size.sources.items() if host != new_host]
    with ThreadPoolExecutor(len(others)) as pool:
        return list(pool.map(probe, others))


# -- agents ----------------------------------------------------------------------


def agent_pids(lab: Lab) -> list[int]:
    procs = lab.state.load()["processes"]
    return [
        p["pid"]
        for p in procs
        if p["what"].endswith("netplugd") and namespaces.start_time(p["pid"]) == p["start"]
    ]


def cpu_ticks(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    return 0


def idle_agents(sizes: list[Size], seconds: float) -> None:
    """Each size's agents' CPU (% of one core, mean and max) over ``seconds`` of quiet,
    all labs measured over the same window; and their RSS."""
    pids = {s.hosts: agent_pids(s.lab) for s in sizes}
    before = {pid: cpu_ticks(pid) for ps in pids.values() for pid in ps}
    time.sleep(seconds)
    hz = os.sysconf("SC_CLK_TCK")
    for size in sizes:
        cpu = [(cpu_ticks(p) - before[p]) / hz / seconds * 100 for p in pids[size.hosts]]
        rss = [namespaces.rss_kib(p) or 0 for p in pids[size.hosts]]
        size.agents = {
            "idle_cpu_pct_mean": sum(cpu) / len(cpu),
            "idle_cpu_pct_max": max(cpu),
            "rss_kib_mean": sum(rss) / len(rss),
            "rss_kib_max": max(rss),
        }
        say(
            f"{size.hosts} hosts: idle agent CPU mean {size.agents['idle_cpu_pct_mean']:.2f} % "
            f"(max {size.agents['idle_cpu_pct_max']:.2f} %), RSS mean "
            f"{size.agents['rss_kib_mean'] / 1024:.1f} MiB"
        )


# -- the run -----------------------------------------------------------------------


def build(owned: Owned, hosts: int, per_host: int, store: str) -> Size:
    size = Size(hosts, owned.lab(f"h{hosts}"), store)
    began = time.monotonic()
    size.lab.up(hosts, store)
    size.setup["up_s"] = time.monotonic() - began
    began = time.monotonic()
    failed = 0
    for h in range(1, hosts + 1):
        names = [f"p{h}-{i}" for i in range(1, per_host + 1)]
        started, errors = size.lab.run_containers(f"host{h}", names)
        failed += len(errors)
        first = next(name for name in names if name in started)
        gateway = str(ip_interface(started[first]).network[1])
        size.sources[f"host{h}"] = (size.lab.container_netns(first), gateway)
    size.setup["containers_s"] = time.monotonic() - began
    size.setup["containers_failed"] = failed
    say(
        f"{hosts} hosts up in {size.setup['up_s']:.1f} s, {hosts * per_host} containers in "
        f"{size.setup['containers_s']:.1f} s ({failed} failed)"
    )
    return size


def sample(size: Size, n: int, timeout: float) -> dict[str, Any]:
    host = f"host{n % size.hosts + 1}"
    name = f"n{n}"
    began = time.monotonic()
    address = str(ip_interface(size.lab.run_container(host, name)).ip)
    added = time.monotonic()
    per_source = converge(size, host, name, address, timeout)
    reached = None if None in per_source else max(per_source)
    again = converge(size, host, name, address, 2.0)  # what probing alone costs
    result = {
        "host": host,
        "add_s": added - began,
        "reach_s": reached,
        "probe_s": None if None in again else max(again),
    }
    size.samples.append(result)
    shown = "TIMEOUT" if reached is None else f"{reached * 1000:.0f} ms"
    say(
        f"  {size.hosts:2d} hosts, sample {len(size.samples):3d}: {name} on {host} reachable "
        f"and resolvable from {size.hosts - 1} hosts after {shown} (ADD "
        f"{result['add_s'] * 1000:.0f} ms, probing alone {_ms(result['probe_s'])})"
    )
    return result


def summary(size: Size) -> dict[str, Any]:
    reach = [s["reach_s"] for s in size.samples]
    ok = [r for r in reach if r is not None]
    probe = [s["probe_s"] for s in size.samples if s["probe_s"] is not None]
    return {
        "hosts": size.hosts,
        "samples": len(reach),
        "timeouts": len(reach) - len(ok),
        "p50_s": quantile(ok, 0.5) if ok else None,
        "p99_s": quantile(ok, 0.99) if ok and len(ok) == len(reach) else None,
        "add_p50_s": quantile([s["add_s"] for s in size.samples], 0.5),
        "probe_p50_s": quantile(probe, 0.5) if probe else None,
        **size.setup,
        **size.agents,
    }


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value * 1000:.0f} ms"


def table(results: list[dict[str, Any]], per_host: int) -> Iterator[str]:
    yield f"| hosts | containers | samples | convergence p50 | p99 | p99 / p99 at {results[0]['hosts']} hosts | ADD p50 | probing alone p50 | idle agent CPU (mean / max) | agent RSS | up | containers started |"  # noqa: E501
    yield "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    base = results[0]["p99_s"]
    for r in results:
        growth = f"{r['p99_s'] / base:.2f}x" if r["p99_s"] and base else "?"
        yield (
            f"| {r['hosts']} | {r['hosts'] * per_host} | {r['samples']} ({r['timeouts']} timeouts)"
            f" | {_ms(r['p50_s'])} | {_ms(r['p99_s'])} | {growth} | {_ms(r['add_p50_s'])} | "
            f"{_ms(r['probe_p50_s'])} | {r['idle_cpu_pct_mean']:.2f} % / "
            f"{r['idle_cpu_pct_max']:.2f} % | {r['rss_kib_mean'] / 1024:.1f} MiB | "
            f"{r['up_s']:.1f} s | {r['containers_s']:.1f} s |"
        )
    yield ""
    yield (
        f"Bars: convergence p99 < {BAR_P99_S:.0f} s at the largest size and ≤ {BAR_GROWTH:.0f}x "
        "its value at the smallest; idle agent CPU < 1 %."
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Needs root and ping. The Markdown table goes to stdout, progress to stderr.",
    )
    parser.add_argument("--hosts", default="3,10", help="lab sizes, comma-separated (3,10)")
    parser.add_argument("--per-host", type=int, default=25, help="containers per host (25)")
    parser.add_argument("--samples", type=int, default=50, help="new containers per size (50)")
    parser.add_argument("--store", choices=["sqlite", "etcd"], default="sqlite")
    parser.add_argument("--timeout", type=float, default=10.0, help="per sample (10 s)")
    parser.add_argument(
        "--idle-seconds", type=float, default=10.0, help="quiet window for idle CPU (10 s)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every number to FILE")
    args = parser.parse_args(argv)
    try:
        args.sizes = sorted({int(h) for h in args.hosts.split(",")})
    except ValueError:
        parser.error("--hosts: comma-separated numbers, e.g. 3,10")
    if not all(2 <= h <= 60 for h in args.sizes) or not 1 <= args.per_host <= 250:
        parser.error("--hosts must be 2..60 each and --per-host 1..250")
    if not 1 <= args.samples <= 500:
        parser.error("--samples must be 1..500")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("scale_bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    owned = Owned(say)
    machine = describe_machine(f"store {args.store}", noisy_load=4.0, say=say)
    sizes: list[Size] = []

    def measure() -> None:
        for hosts in args.sizes:
            sizes.append(build(owned, hosts, args.per_host, args.store))
        idle_agents(sizes, args.idle_seconds)
        for n in range(args.samples):  # interleaved: one sample per size in turn
            for size in sizes:
                sample(size, n, args.timeout)

    if not run_guarded(measure, owned.release, say):
        return 130
    results = [summary(size) for size in sizes]
    print("\n".join(table(results, args.per_host)))
    print(f"\nMeasured on {machine} (`bench/scale_bench.py`).")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "sizes": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
