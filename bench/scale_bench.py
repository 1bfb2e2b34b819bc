"""Scale benchmark (issue 12): convergence of a new container at 3, 10 (and 40) hosts.

One netns-lab per size (``--hosts 3,10``), all up at once, each with
``--per-host`` containers on every host (``netns-lab run --count``). Then the
samples are interleaved across the labs (one lab's sample, the next lab's, and
so on: the labs share this noisy 2-core box, so each sees the same noise). A
sample ADDs one new container on one host (round robin) and times, from the
moment the ADD returns, until a container on *every other* host both pings it
and resolves its name through its own host's DNS (its gateway): that host's
agent has programmed the overlay peer and the name. Each source's UDP and raw
ICMP sockets are opened once, in its namespace, and one thread polls them all
(selectors): what a probe costs does not grow with the hosts' count. Reported
per size: p50 and p99 of that time, and of its two parts, the last DNS answer
(the agents have the record: propagation) and the last echo reply (the data
path); ADD time; what probing alone costs (the same probes once more, after
convergence); and how often the box's neighbour tables were full meanwhile
(``table_fulls`` of /proc/net/stat/arp_cache and ndisc_cache, box-wide). Also
per size: agent RSS and idle CPU per agent (``--idle-seconds`` of quiet after
setup, from /proc), and how long ``up`` and the containers took.

Progress goes to stderr; a Markdown table for the README goes to stdout
(``--json FILE`` writes every number). Needs root, ping; everything it makes is
a namespace named ``npb-<random>-...``, removed at the end, also on Ctrl-C.

Per size, too: what one ADD costs the store and the other hosts, from a burst
of ``--burst`` ADDs on host1 with nothing else going on (write transactions,
i.e. revisions, and store events per ADD, read back through a watch of the
store's history; on etcd also its request counters from ``/metrics``), and the
CPU the *other* agents spent per store event they received (their CPU over the
burst, less their idle rate, over the events); and ``--new-hosts`` times the
lab grows by one host: until its agent serves, and until a container on it is
reachable and resolvable from every other host.

``--big N`` adds a 3-host lab whose host1 holds N containers (1000: four /24
blocks); its samples alternate an ADD on host1 and on host3 (a host with one
container), each DELeted again after its convergence, which gives ADD latency
on a full host against an almost empty one in the same lab (bar: ≤ 1.2x) and
the convergence of a container on the full host.

    sudo .venv/bin/python bench/scale_bench.py --hosts 3,10 --per-host 25 --samples 50
    sudo .venv/bin/python bench/scale_bench.py --hosts 3,40 --big 1000 --samples 50
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import selectors
import socket
import struct
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import ip_interface
from pathlib import Path
from typing import Any

from netplug.ipam.schema import ROOT
from netplug.lab import namespaces
from netplug.lab.lab import Lab
from netplug.net import netns

import harness
from harness import Owned, describe_machine, dns_query, quantile, run_guarded, stamped_printer

BAR_P99_S = 1.0
BAR_GROWTH = 2.0
BAR_BIG_ADD = 1.2
ETCD_COUNTERS = ("range", "txn", "put", "delete")  # etcd_mvcc_<name>_total
DNS_PORT = 53
PROBE_INTERVAL = 0.01
ICMP_ECHO, ICMP_ECHO_REPLY = 8, 0

say = stamped_printer(width=6)


@dataclass
class Size:
    """One lab of ``hosts`` hosts, and what was measured on it."""

    hosts: int
    lab: Lab
    store: str = ""
    # host -> a container's namespace on it, which probes the others
    sources: dict[str, str] = field(default_factory=dict)
    probers: dict[str, Prober] = field(default_factory=dict)  # host -> its source's sockets
    setup: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    agents: dict[str, Any] = field(default_factory=dict)
    burst: dict[str, Any] = field(default_factory=dict)
    new_hosts: list[dict[str, Any]] = field(default_factory=list)
    big: int = 0  # containers on host1 of a --big lab; 0 for the sizes


# -- probes ----------------------------------------------------------------------


@dataclass
class Prober:
    """One source container's sockets, opened once in its namespace and kept for the
    run: a probe is then a send and a read, with no thread or setns per sample."""

    gateway: str  # its host's DNS
    udp: socket.socket
    icmp: socket.socket

    @classmethod
    def open(cls, where: str, gateway: str) -> Prober:
        with netns.entered(namespaces.path(where)):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        udp.setblocking(False)
        icmp.setblocking(False)
        return cls(gateway, udp, icmp)

    def close(self) -> None:
        self.udp.close()
        self.icmp.close()


@dataclass
class Probe:
    """One source's progress towards a new container: when its name resolved and
    when it answered an echo (seconds since the probe began; None: not yet)."""

    prober: Prober
    dns_s: float | None = None
    ping_s: float | None = None

    @property
    def done(self) -> bool:
        return self.dns_s is not None and self.ping_s is not None

    def saw(self, kind: str, target: Target, reply: bytes, source: str, at: float) -> None:
        """A datagram on this source's socket ``kind`` ("dns", "ping"), ``at`` seconds in."""
        if kind == "dns" and self.dns_s is None and target.answered_by(reply):
            self.dns_s = at
        elif kind == "ping" and self.ping_s is None and target.echoed_by(reply, source):
            self.ping_s = at


@dataclass
class Target:
    """What one sample's probes ask for: a DNS query for the new container's name
    (all but its id: each round's id is ``base`` + the round) and echoes to its
    address (identifier ``ident``, sequence: the round)."""

    query: bytes
    address: str
    ident: int = field(default_factory=lambda: random.randrange(1 << 16))
    base: int = field(default_factory=lambda: random.randrange(1 << 16))
    rounds: int = 0

    @classmethod
    def of(cls, name: str, address: str) -> Target:
        return cls(dns_query(f"{name}.lab.netplug.internal", 0)[2:], address)

    def next_round(self) -> tuple[bytes, bytes]:
        """This round's DNS query and echo request."""
        self.rounds += 1
        qid = (self.base + self.rounds) & 0xFFFF
        return struct.pack("!H", qid) + self.query, icmp_echo(self.ident, self.rounds & 0xFFFF)

    def answered_by(self, reply: bytes) -> bool:
        """An answer to one of this sample's queries that carries the address."""
        ours = (int.from_bytes(reply[:2], "big") - self.base) & 0xFFFF <= self.rounds
        return ours and socket.inet_aton(self.address) in reply[12:]

    def echoed_by(self, reply: bytes, source: str) -> bool:
        return echo_reply_from(reply, source, self.address, self.ident)


def icmp_echo(ident: int, seq: int) -> bytes:
    payload = b"netplug scale_bench"
    header = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO, 0, _checksum(header + payload), ident, seq) + payload


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def echo_reply_from(reply: bytes, source: str, address: str, ident: int) -> bool:
    at = (reply[0] & 0x0F) * 4  # past the IP header
    if source != address or len(reply) < at + 8:
        return False
    kind, _, _, got = struct.unpack_from("!BBHH", reply, at)
    return kind == ICMP_ECHO_REPLY and got == ident


def slowest(probes: list[Probe], what: str = "") -> float | None:
    """The last source's time until both answered (or only ``what``: "dns_s" or
    "ping_s"); None if one never did."""
    times = [
        getattr(p, what) if what else (max(p.dns_s, p.ping_s) if p.done else None) for p in probes
    ]  # type: ignore[type-var]
    return None if None in times else max(times)  # type: ignore[type-var]


def table_fulls() -> int:
    """How often the box's neighbour tables (ARP and ND, shared by every namespace)
    were full so far: ``table_fulls`` of /proc/net/stat/*_cache, over all CPUs."""
    total = 0
    for table in ("arp_cache", "ndisc_cache"):
        rows = Path(f"/proc/net/stat/{table}").read_text().split("\n")
        column = rows[0].split().index("table_fulls")
        total += sum(int(row.split()[column], 16) for row in rows[1:] if row.strip())
    return total


def other_hosts(size: Size, new_host: str) -> list[str]:
    return [host for host in size.sources if host != new_host]


def converge(size: Size, new_host: str, name: str, address: str, timeout: float) -> list[Probe]:
    """Each other host's source, probing ``address`` (ICMP echo) and ``name`` (a DNS
    query to its gateway) every PROBE_INTERVAL from one thread until both answer
    (``Probe.done``) or ``timeout`` passes. A DNS answer tells that the source's
    agent has the record (propagation); an echo reply, the data path."""
    start = time.monotonic()
    probes = [Probe(size.probers[host]) for host in other_hosts(size, new_host)]
    target = Target.of(name, address)
    with _listening(probes) as selector:
        while (now := time.monotonic()) < start + timeout and not all(p.done for p in probes):
            query, echo = target.next_round()
            for probe in probes:
                _send(probe, query, echo, address)
            _collect(selector, target, start, min(now + PROBE_INTERVAL, start + timeout))
    return probes


@contextlib.contextmanager
def _listening(probes: list[Probe]) -> Iterator[selectors.BaseSelector]:
    """A selector over every source's two sockets, emptied of what earlier
    samples' probes left queued."""
    with selectors.DefaultSelector() as selector:
        for probe in probes:
            for kind, sock in (("dns", probe.prober.udp), ("ping", probe.prober.icmp)):
                for _ in _received(sock):
                    pass
                selector.register(sock, selectors.EVENT_READ, (probe, kind))
        yield selector


def _collect(selector: selectors.BaseSelector, target: Target, start: float, until: float) -> None:
    """Read the replies that come in until ``until``, into their probes."""
    while (left := until - time.monotonic()) > 0:
        for key, _ in selector.select(left):
            probe, kind = key.data
            for reply, source in _received(key.fileobj):
                probe.saw(kind, target, reply, source, time.monotonic() - start)


def _send(probe: Probe, query: bytes, echo: bytes, address: str) -> None:
    """This round's DNS query and echo request, for what has not answered yet. No
    route or neighbour yet (an OSError) is "not reachable yet", as for ping."""
    with contextlib.suppress(OSError):
        if probe.dns_s is None:
            probe.prober.udp.sendto(query, (probe.prober.gateway, DNS_PORT))
        if probe.ping_s is None:
            probe.prober.icmp.sendto(echo, (address, 0))


def _received(sock) -> Iterator[tuple[bytes, str]]:
    """Every datagram waiting on ``sock`` (an ICMP error queued for an earlier
    echo is skipped)."""
    while True:
        try:
            data, (source, _) = sock.recvfrom(1024)
        except BlockingIOError:
            return
        except OSError:
            continue
        yield data, source


# -- agents ----------------------------------------------------------------------


def agent_pids(lab: Lab) -> dict[str, int]:
    """host -> its running agent's PID."""
    procs = lab.state.load()["processes"]
    return {
        p["what"].removesuffix("/netplugd"): p["pid"]
        for p in procs
        if p["what"].endswith("/netplugd") and namespaces.start_time(p["pid"]) == p["start"]
    }


def cpu_ticks(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    return 0


def idle_agents(sizes: list[Size], seconds: float) -> None:
    """Each size's agents' CPU (% of one core, mean and max) over ``seconds`` of quiet,
    all labs measured over the same window; and their RSS."""
    pids = {id(s): list(agent_pids(s.lab).values()) for s in sizes}
    before = {pid: cpu_ticks(pid) for ps in pids.values() for pid in ps}
    time.sleep(seconds)
    hz = os.sysconf("SC_CLK_TCK")
    for size in sizes:
        cpu = [(cpu_ticks(p) - before[p]) / hz / seconds * 100 for p in pids[id(size)]]
        rss = [namespaces.rss_kib(p) or 0 for p in pids[id(size)]]
        size.agents = {
            "idle_cpu_pct_mean": sum(cpu) / len(cpu),
            "idle_cpu_pct_max": max(cpu),
            "rss_kib_mean": sum(rss) / len(rss),
            "rss_kib_max": max(rss),
        }
        say(
            f"{label(size)}: idle agent CPU mean {size.agents['idle_cpu_pct_mean']:.2f} % "
            f"(max {size.agents['idle_cpu_pct_max']:.2f} %), RSS mean "
            f"{size.agents['rss_kib_mean'] / 1024:.1f} MiB"
        )


# -- the store's side of an ADD -------------------------------------------------------


def store_events(lab: Lab, after: int) -> tuple[int, int]:
    """(the store's revision now, how many events it holds after revision ``after``),
    read back through a watch of its history."""
    count = 0
    with lab.store() as store:
        now = store.status()
        if now > after:
            with contextlib.closing(store.watch(ROOT, after + 1, 0.5)) as watch:  # type: ignore[type-var]
                for batch in watch:
                    count += len(batch)
                    if not batch or batch[-1].kv.mod_revision >= now:
                        break
    return now, count


def etcd_requests(lab: Lab) -> dict[str, float]:
    """etcd's request counters (etcd_mvcc_<name>_total); {} on SQLite."""
    url = lab.state.load()["store"]
    if not url.startswith("etcd://"):
        return {}
    address = url.removeprefix("etcd://").split(",")[0]
    metrics = f"http://{address}/metrics"
    with (
        netns.entered(namespaces.path(lab.fabric)),
        urllib.request.urlopen(metrics, timeout=5) as reply,
    ):
        text = reply.read().decode()
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        for counter in ETCD_COUNTERS:
            if name == f"etcd_mvcc_{counter}_total":
                found[counter] = float(value)
    return found


def burst(size: Size, count: int) -> None:
    """``count`` ADDs on host1 with nothing else going on: the store's writes and
    events per ADD, and the CPU the other agents spent per event they received."""
    pids = agent_pids(size.lab)
    followers = [pid for host, pid in pids.items() if host != "host1"]
    with size.lab.store() as store:
        first = store.status()
    requests = etcd_requests(size.lab)
    ticks = sum(cpu_ticks(pid) for pid in followers)
    began = time.monotonic()
    started, _ = size.lab.run_containers("host1", [f"b{i}" for i in range(count)])
    time.sleep(1.0)  # the followers finish with the last events
    window = time.monotonic() - began
    ticks = sum(cpu_ticks(pid) for pid in followers) - ticks
    last, events = store_events(size.lab, first)
    requests = {k: v - requests.get(k, 0) for k, v in etcd_requests(size.lab).items()}
    idle_s = size.agents["idle_cpu_pct_mean"] / 100 * window * len(followers)
    cpu_s = max(0.0, ticks / os.sysconf("SC_CLK_TCK") - idle_s)
    adds = max(1, len(started))
    size.burst = {
        "adds": len(started),
        "revisions_per_add": (last - first) / adds,
        "events_per_add": events / adds,
        # Every agent watches the whole key space: each event goes to each of them.
        "watch_events_per_add": events * len(pids) / adds,
        "follower_cpu_ms_per_event": cpu_s * 1000 / max(1, events * len(followers)),
        **{f"etcd_{name}_per_add": value / adds for name, value in requests.items()},
    }
    say(
        f"{label(size)}: per ADD {size.burst['revisions_per_add']:.1f} store writes, "
        f"{size.burst['events_per_add']:.1f} events ({size.burst['watch_events_per_add']:.0f} "
        f"watch events to the agents); other agents' CPU "
        f"{size.burst['follower_cpu_ms_per_event']:.2f} ms per event"
        + "".join(f", etcd {k} {v / adds:.1f}/ADD" for k, v in requests.items())
    )


def grow(size: Size, timeout: float) -> None:
    """One more host: until its agent serves, and until a container on it is
    reachable and resolvable from every original host."""
    index = size.hosts + len(size.new_hosts) + 1
    began = time.monotonic()
    host = size.lab.add_host(index)
    serving = time.monotonic() - began
    name = f"g{index}"
    address = str(ip_interface(size.lab.run_container(host, name)).ip)
    added = time.monotonic() - began
    per_source = converge(size, host, name, address, timeout)
    last = slowest(per_source)
    reached = None if last is None else added + last
    size.new_hosts.append({"serving_s": serving, "added_s": added, "reach_s": reached})
    say(
        f"{label(size)}: new {host} served after {serving:.1f} s, its container reachable "
        f"and resolvable from {len(per_source)} hosts after {_s(reached)} (ADD done at "
        f"{added:.1f} s)"
    )


# -- the run -----------------------------------------------------------------------


def label(size: Size) -> str:
    return f"{size.hosts} hosts" + (f", {size.big} on host1" if size.big else "")


def build(owned: Owned, hosts: int, per_host: int, store: str, big: int = 0) -> Size:
    """A lab of ``hosts`` with ``per_host`` containers on each, and with ``big``
    more on host1 for a --big lab."""
    size = Size(hosts, owned.lab(f"big{big}" if big else f"h{hosts}"), store, big=big)
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
        size.sources[f"host{h}"] = where = size.lab.container_netns(first)
        size.probers[f"host{h}"] = Prober.open(where, gateway)
    if big:
        names = [f"f-{i}" for i in range(1, big - per_host + 1)]
        failed += len(size.lab.run_containers("host1", names, parallel=8)[1])
    size.setup["containers_s"] = time.monotonic() - began
    size.setup["containers_failed"] = failed
    say(
        f"{label(size)} up in {size.setup['up_s']:.1f} s, "
        f"{hosts * per_host + max(0, big - per_host)} containers in "
        f"{size.setup['containers_s']:.1f} s ({failed} failed)"
    )
    return size


def sample(size: Size, n: int, timeout: float, host: str = "") -> dict[str, Any]:
    host = host or f"host{n % size.hosts + 1}"
    name = f"n{n}-{host}"
    began = time.monotonic()
    address = str(ip_interface(size.lab.run_container(host, name)).ip)
    added = time.monotonic()
    fulls = table_fulls()
    per_source = converge(size, host, name, address, timeout)
    reached = slowest(per_source)
    fulls = table_fulls() - fulls
    again = converge(size, host, name, address, 2.0)  # what probing alone costs
    result = {
        "host": host,
        "add_s": added - began,
        "reach_s": reached,
        "dns_s": slowest(per_source, "dns_s"),
        "ping_s": slowest(per_source, "ping_s"),
        "probe_s": slowest(again),
        "table_fulls": fulls,
        "load": os.getloadavg()[0],  # the box is shared: the noise next to each figure
    }
    size.samples.append(result)
    late = [h for h, p in zip(other_hosts(size, host), per_source, strict=True) if not p.done]
    shown = f"TIMEOUT (from {', '.join(late)})" if late else f"{reached * 1000:.0f} ms"
    say(
        f"  {label(size)}, sample {len(size.samples):3d}: {name} reachable and resolvable "
        f"from {len(per_source)} hosts after {shown} (ADD {result['add_s'] * 1000:.0f} ms, "
        f"probing alone {_ms(result['probe_s'])}; last DNS answer {_ms(result['dns_s'])}, "
        f"last echo reply {_ms(result['ping_s'])}; neighbour table full {fulls} times)"
    )
    return result


def sample_big(size: Size, n: int, timeout: float) -> None:
    """An ADD on the full host1, then one on host3 (one container), each DELeted
    after its convergence so that both hosts keep their count."""
    for host in ("host1", "host3"):
        sample(size, n, timeout, host)
        size.lab.remove_container(f"n{n}-{host}")


def convergence(samples: list[dict[str, Any]]) -> dict[str, Any]:
    reach = [s["reach_s"] for s in samples]
    ok = [r for r in reach if r is not None]
    probe = [s["probe_s"] for s in samples if s["probe_s"] is not None]
    adds = [s["add_s"] for s in samples]
    return {
        "samples": len(reach),
        "timeouts": len(reach) - len(ok),
        "p50_s": quantile(ok, 0.5) if ok else None,
        "p99_s": quantile(ok, 0.99) if ok and len(ok) == len(reach) else None,
        "add_p50_s": quantile(adds, 0.5),
        "add_p99_s": quantile(adds, 0.99),
        "probe_p50_s": quantile(probe, 0.5) if probe else None,
        "probe_p99_s": quantile(probe, 0.99) if probe else None,
        "dns_p99_s": _p99([s["dns_s"] for s in samples]),
        "ping_p99_s": _p99([s["ping_s"] for s in samples]),
        "table_fulls": sum(s["table_fulls"] for s in samples),
        "load": (min(s["load"] for s in samples), max(s["load"] for s in samples)),
    }


def _p99(values: list[float | None]) -> float | None:
    """The 99th percentile, None if any value is (a timeout)."""
    return None if None in values or not values else quantile(values, 0.99)  # type: ignore[arg-type]


def summary(size: Size) -> dict[str, Any]:
    result: dict[str, Any] = {
        "hosts": size.hosts,
        "big": size.big,
        **convergence(size.samples),
        **size.setup,
        **size.agents,
        **size.burst,
        "new_hosts": size.new_hosts,
        "each_sample": size.samples,
    }
    if size.big:
        full = convergence([s for s in size.samples if s["host"] == "host1"])
        empty = convergence([s for s in size.samples if s["host"] == "host3"])
        result.update(full=full, empty=empty, add_ratio=full["add_p50_s"] / empty["add_p50_s"])
    return result


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value * 1000:.0f} ms"


def _s(value: float | None) -> str:
    return "TIMEOUT" if value is None else f"{value:.2f} s"


def _span(values: list[float | None]) -> str:
    """min-max of ``values`` in seconds; TIMEOUT if any timed out; - if none."""
    if not values:
        return "-"
    if None in values:
        return "TIMEOUT"
    return f"{min(values):.2f}-{max(values):.2f} s"  # type: ignore[type-var]


def table(results: list[dict[str, Any]], per_host: int) -> Iterator[str]:
    sizes = [r for r in results if not r["big"]]
    yield f"| hosts | containers | samples | convergence p50 | p99 | p99 / p99 at {sizes[0]['hosts']} hosts | last DNS answer p99 | last echo reply p99 | neighbour table full | load average | ADD p50 | probing alone p50 / p99 | idle agent CPU (mean / max) | agent RSS | up | containers started |"  # noqa: E501
    yield "|" + " ---: |" * 16
    base = sizes[0]["p99_s"]
    for r in sizes:
        growth = f"{r['p99_s'] / base:.2f}x" if r["p99_s"] and base else "?"
        yield (
            f"| {r['hosts']} | {r['hosts'] * per_host} | {r['samples']} ({r['timeouts']} timeouts)"
            f" | {_ms(r['p50_s'])} | {_ms(r['p99_s'])} | {growth} | {_ms(r['dns_p99_s'])} | "
            f"{_ms(r['ping_p99_s'])} | {r['table_fulls']} | "
            f"{r['load'][0]:.0f}-{r['load'][1]:.0f} | "
            f"{_ms(r['add_p50_s'])} | "
            f"{_ms(r['probe_p50_s'])} / {_ms(r['probe_p99_s'])} | {r['idle_cpu_pct_mean']:.2f} % / "
            f"{r['idle_cpu_pct_max']:.2f} % | {r['rss_kib_mean'] / 1024:.1f} MiB | "
            f"{r['up_s']:.1f} s | {r['containers_s']:.1f} s |"
        )
    yield ""
    yield (
        f"Bars: convergence p99 < {BAR_P99_S:.0f} s at the largest size and ≤ {BAR_GROWTH:.0f}x "
        "its value at the smallest; idle agent CPU < 1 %."
    )
    yield from cost_table(results)
    yield from big_table([r for r in results if r["big"]])


def cost_table(results: list[dict[str, Any]]) -> Iterator[str]:
    if not any(r.get("adds") or r["new_hosts"] for r in results):
        return
    etcd = [k for k in results[0] if k.startswith("etcd_") and k.endswith("_per_add")]
    yield ""
    yield (
        "| lab | store writes / ADD | store events / ADD | watch events / ADD (all agents) | "
        "other agents' CPU / event | "
        + "".join(f"etcd {k[5:-8]} / ADD | " for k in etcd)
        + "new host: agent serving | new host: reachable from all |"
    )
    yield "| --- |" + " ---: |" * (6 + len(etcd))
    for r in results:
        name = f"{r['hosts']} hosts" + (f", {r['big']} on host1" if r["big"] else "")
        grown = r["new_hosts"]
        cost = (
            f"{r['revisions_per_add']:.1f} | {r['events_per_add']:.1f} | "
            f"{r['watch_events_per_add']:.0f} | {r['follower_cpu_ms_per_event']:.2f} ms | "
            + "".join(f"{r[k]:.1f} | " for k in etcd)
            if "adds" in r
            else "- | " * (4 + len(etcd))
        )
        yield (
            f"| {name} | {cost}{_span([g['serving_s'] for g in grown])} | "
            f"{_span([g['reach_s'] for g in grown])} |"
        )


def big_table(results: list[dict[str, Any]]) -> Iterator[str]:
    for r in results:
        full, empty = r["full"], r["empty"]
        yield ""
        yield (
            f"| {r['hosts']} hosts, {r['big']} containers on host1 | ADD p50 | ADD p99 | "
            "convergence p50 | p99 |"
        )
        yield "| --- | ---: | ---: | ---: | ---: |"
        for what, c in ((f"ADD on host1 ({r['big']} containers)", full), ("on host3 (1)", empty)):
            yield (
                f"| {what} | {_ms(c['add_p50_s'])} | {_ms(c['add_p99_s'])} | "
                f"{_ms(c['p50_s'])} | {_ms(c['p99_s'])} |"
            )
        yield ""
        yield (
            f"ADD p50 on the full host / on the empty one: {r['add_ratio']:.2f}x "
            f"(bar ≤ {BAR_BIG_ADD}x); {full['samples']} samples each, interleaved."
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = harness.bench_parser(__doc__, "root and ping")
    parser.add_argument("--hosts", default="3,10", help="lab sizes, comma-separated (3,10)")
    parser.add_argument("--per-host", type=int, default=25, help="containers per host (25)")
    parser.add_argument("--samples", type=int, default=50, help="new containers per size (50)")
    parser.add_argument("--store", choices=["sqlite", "etcd"], default="sqlite")
    parser.add_argument("--timeout", type=float, default=10.0, help="per sample (10 s)")
    parser.add_argument(
        "--idle-seconds", type=float, default=10.0, help="quiet window for idle CPU (10 s)"
    )
    parser.add_argument(
        "--burst", type=int, default=20, help="ADDs per lab for the per-ADD costs (20; 0: skip)"
    )
    parser.add_argument(
        "--new-hosts", type=int, default=3, help="hosts each lab grows by, timed (3; 0: skip)"
    )
    parser.add_argument(
        "--big", type=int, default=0, help="also a 3-host lab with this many on host1 (0: none)"
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
    if not (0 <= args.burst <= 200 and 0 <= args.new_hosts <= 10 and 0 <= args.big <= 1000):
        parser.error("--burst must be 0..200, --new-hosts 0..10 and --big 0..1000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not harness.needs_root("scale_bench"):
        return 2
    owned = Owned(say)
    machine = describe_machine(f"store {args.store}", noisy_load=4.0, say=say)
    sizes: list[Size] = []

    def measure() -> None:
        for hosts in args.sizes:
            sizes.append(build(owned, hosts, args.per_host, args.store))
        if args.big:
            sizes.append(build(owned, 3, 1, args.store, args.big))
        idle_agents(sizes, args.idle_seconds)
        for n in range(args.samples):  # interleaved: one sample per lab in turn
            for size in sizes:
                (sample_big if size.big else sample)(size, n, args.timeout)
        for size in sizes if args.burst else ():
            burst(size, args.burst)
        for _ in range(args.new_hosts):
            for size in sizes:
                grow(size, args.timeout)

    if not run_guarded(measure, owned.release, say):
        return 130
    results = [summary(size) for size in sizes]
    numbers = {"machine": machine, "sizes": results}
    return harness.report(
        table(results, args.per_host), machine, "scale_bench.py", args.json, numbers
    )


if __name__ == "__main__":
    sys.exit(main())
