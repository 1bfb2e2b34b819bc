"""Many probes at once: TCP, UDP and ICMP from container namespaces, in parallel.

A policy test asks dozens of "does A reach B on this protocol and port?"
questions; each denied answer costs a timeout. ``matrix`` asks them all at
once (one process per client namespace, one thread per probe), so a whole
table of expectations costs about one timeout. ``flows`` keeps long-lived TCP
and UDP conversations going and records every exchange, for the tests that
change policies while connections are open.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from traffic import ready_processes

TCP_PORTS = (8080, 8081)
UDP_PORTS = (9090, 9091)
TIMEOUT = 1.0  # seconds a probe waits for its answer (one host: answers take ms)
FLOW_WAIT = 0.5  # seconds a flow's exchange waits for its echo (a loaded machine is slow)

# TCP: "hi" on accept, then echoes until the peer closes; UDP: echoes each datagram.
SERVER = """\
import socket, sys, threading
tcp, udp = sys.argv[1].split(","), sys.argv[2].split(",")
def bound(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", int(port)))
    return s
def echo(c):
    with c:
        c.sendall(b"hi")
        while data := c.recv(4096):
            c.sendall(data)
def serve_tcp(s):
    s.listen(256)
    while True:
        c, _ = s.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()
def serve_udp(s):
    while True:
        data, peer = s.recvfrom(4096)
        s.sendto(data, peer)
for p in tcp:
    threading.Thread(target=serve_tcp, args=(bound(socket.SOCK_STREAM, p),), daemon=True).start()
for p in udp:
    threading.Thread(target=serve_udp, args=(bound(socket.SOCK_DGRAM, p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

# argv[1]: JSON [[protocol, address, port], ...]; prints a JSON list of booleans.
PROBE = """\
import json, socket, subprocess, sys, threading
todo, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
found = [False] * len(todo)
def family(address):
    return socket.AF_INET6 if ":" in address else socket.AF_INET
def tcp(address, port):
    with socket.create_connection((address, port), timeout=timeout) as c:
        c.settimeout(timeout)
        return c.recv(2) == b"hi"
def udp(address, port):
    with socket.socket(family(address), socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(b"probe", (address, port))
        return s.recv(16) == b"probe"
def dns(address, port):
    query = bytes.fromhex("abcd01000001000000000000") + b"\\x05probe\\x00\\x00\\x01\\x00\\x01"
    with socket.socket(family(address), socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query, (address, port))
        return s.recv(512)[:2] == query[:2]
def icmp(address, port):
    cmd = ["ping", "-c", "1", "-W", str(max(1, round(timeout))), address]
    return subprocess.run(cmd, capture_output=True).returncode == 0
def one(i, protocol, address, port):
    try:
        found[i] = globals()[protocol](address, port)
    except OSError:
        found[i] = False
threads = [threading.Thread(target=one, args=(i, *t)) for i, t in enumerate(todo)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(found), flush=True)
"""

# A TCP connection ``t`` and a UDP socket ``u`` to argv[1] (ports argv[2], argv[3]);
# argv[4]: the seconds an exchange waits for its echo.
CONVERSATIONS = """\
import json, select, socket, sys, threading, time
address, tport, uport, wait = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
fam = socket.AF_INET6 if ":" in address else socket.AF_INET
t = socket.create_connection((address, tport), timeout=2)
assert t.recv(2) == b"hi"
u = socket.socket(fam, socket.SOCK_DGRAM); u.connect((address, uport))
"""

# Both CONVERSATIONS, each exchanging a token every 50 ms (in a thread of its own)
# until stdin closes; one JSON line per exchange: [time, protocol, answered within
# FLOW_WAIT].
FLOW = (
    CONVERSATIONS
    + """\
done, printing = threading.Event(), threading.Lock()
print("ready", flush=True)
def converse(s, proto):
    n = 0
    while not done.is_set():
        n += 1
        token = b"%s%08d" % (proto.encode(), n)
        try:
            s.send(token)
        except OSError:
            pass
        deadline, ok = time.monotonic() + wait, False
        while not ok and time.monotonic() < deadline:
            if select.select([s], [], [], max(0, deadline - time.monotonic()))[0]:
                try:
                    ok = token in s.recv(65536)  # older tokens echoed late: read on
                except OSError:
                    break
        with printing:
            print(json.dumps([time.monotonic(), proto, ok]), flush=True)
        done.wait(0.05)
threads = [threading.Thread(target=converse, args=a) for a in ((t, "tcp"), (u, "udp"))]
for th in threads: th.start()
sys.stdin.read()
done.set()
for th in threads: th.join()
"""
)


def netns_python(netns: str, script: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", netns, sys.executable, "-c", script, *args]


V4, V6 = 2, 10  # AF_INET, AF_INET6
UDP, TCP = 17, 6
# Makes the conntrack entries argv[1], JSON [[family, orig src, orig dst, proto, reply
# src, reply dst], ...], in the namespace it runs in; left(): every entry there, as
# [orig src, orig dst, reply src, reply dst], sorted.
CONNTRACK = """\
import json, socket, sys
from pyroute2.conntrack import Conntrack, NFCTAttrTuple
def add(fam, osrc, odst, proto, rsrc, rdst):
    ct = Conntrack(nfgen_family=fam)
    orig = NFCTAttrTuple(family=fam, saddr=osrc, daddr=odst, proto=proto, sport=1000, dport=2000)
    reply = NFCTAttrTuple(family=fam, saddr=rsrc, daddr=rdst, proto=proto, sport=2000, dport=1000)
    ct.entry("add", timeout=120, tuple_orig=orig, tuple_reply=reply)
    ct.close()
def left():
    found = []
    for fam in (socket.AF_INET, socket.AF_INET6):
        ct = Conntrack(nfgen_family=fam)
        found += [[e.tuple_orig.saddr, e.tuple_orig.daddr, e.tuple_reply.saddr, e.tuple_reply.daddr]
                  for e in ct.dump_entries()]
        ct.close()
    return sorted(found)
for entry in json.loads(sys.argv[1]):
    add(*entry)
"""


def conntrack_entries(netns: str, made: Sequence[tuple] = ()) -> list[list[str]]:
    """Make the entries ``made`` (``CONNTRACK``'s argv[1]) in ``netns``; every entry
    there then, as [orig src, orig dst, reply src, reply dst], sorted."""
    argv = netns_python(netns, CONNTRACK + "print(json.dumps(left()))\n", json.dumps(made))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def echo_servers():
    """``start(netns)``: TCP and UDP echo servers in that namespace; all killed after."""
    ports = ",".join(map(str, TCP_PORTS)), ",".join(map(str, UDP_PORTS))
    return ready_processes(lambda netns: netns_python(netns, SERVER, *ports))


@dataclass(frozen=True)
class Probe:
    client: str  # a namespace
    protocol: str  # tcp | udp | icmp | dns
    address: str
    port: int = 0
    expect: bool = True

    def __str__(self) -> str:
        port = f":{self.port}" if self.port else ""
        verb = "reaches" if self.expect else "must not reach"
        return f"{self.client} {verb} {self.protocol} {self.address}{port}"


def run_probes(probes: Sequence[Probe], timeout: float = TIMEOUT) -> list[bool]:
    """Every probe's outcome, all run at once (bounded by ``timeout`` each)."""
    by_client: dict[str, list[int]] = {}
    for i, p in enumerate(probes):
        by_client.setdefault(p.client, []).append(i)
    procs = {}
    for client, indexes in by_client.items():
        todo = json.dumps(
            [[probes[i].protocol, probes[i].address, probes[i].port] for i in indexes]
        )
        argv = netns_python(client, PROBE, todo, str(timeout))
        procs[client] = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    found = [False] * len(probes)
    for client, proc in procs.items():
        out, _ = proc.communicate(timeout=30 + 5 * timeout)
        for i, ok in zip(by_client[client], json.loads(out), strict=True):
            found[i] = ok
    return found


def mismatches(probes: Sequence[Probe], tries: int = 2) -> list[str]:
    """The probes whose outcome is not what they expect. A probe expected to pass
    that failed is asked again (``tries`` in all): a loaded machine may lose an
    answer; a denied one never passes by chance."""
    wrong = list(probes)
    for _ in range(tries):
        got = run_probes(wrong)
        wrong = [p for p, ok in zip(wrong, got, strict=True) if ok != p.expect]
        if not any(p.expect for p in wrong):
            break
    return [str(p) for p in wrong]


@contextmanager
def flows(pairs: Sequence[tuple[str, str]], log_dir: Path) -> Iterator[list[Path]]:
    """A ``FLOW`` from each (client namespace, address); yields their log files and
    stops them after (closing their stdin)."""
    procs, logs = [], []
    try:
        for i, (client, address) in enumerate(pairs):
            log = log_dir / f"flow-{i}.jsonl"
            sink = open(log, "w")  # noqa: SIM115 (closed below, after the process)
            ports = str(TCP_PORTS[0]), str(UDP_PORTS[0])
            argv = netns_python(client, FLOW, address, *ports, str(FLOW_WAIT))
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=sink)
            procs.append((proc, sink))
            logs.append(log)
        for log in logs:
            deadline = time.monotonic() + 10
            while "ready" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert "ready" in log.read_text(), f"{log}: the flow did not connect"
        yield logs
    finally:
        for proc, sink in procs:
            if proc.stdin:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            sink.close()


def exchanges(log: Path, protocol: str, since: float, until: float) -> list[bool]:
    """Whether each ``protocol`` exchange of a flow between ``since`` and ``until``
    (monotonic seconds) was answered."""
    found = []
    for line in log.read_text().splitlines():
        if line.startswith("["):
            at, proto, ok = json.loads(line)
            if proto == protocol and since <= at <= until:
                found.append(ok)
    return found
