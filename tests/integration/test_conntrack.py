"""Conntrack entries of a released address (``netplug.net.conntrack``), on a real kernel.

First the deletion itself, on entries made by hand in a namespace of the test's
own: exactly the entries with the address in their original or reply tuple go,
IPv4 and IPv6 (the kernel's IPv6 filter is inverted, so IPv6 is matched here).
Then real traffic: a container allowed to talk to ``b`` keeps a UDP flow going
(refreshed by its sender) and holds a TCP connection; ``b`` is deleted and a
new container on the same address, which a policy denies, is added. The flow
must stop reaching it and the TCP connection's next segment must not reach it
(it would answer with a reset): on one host (DEL deletes the entries, through
the agent and in-process), and across hosts (the client's host judges its
egress; its enforcer deletes the entries when the address leaves a set).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from ipaddress import ip_address
from pathlib import Path

import pytest
from policy_hosts import SUBNETS, Containers, apply, ctl
from probes import (
    CONNTRACK,
    FLOW_WAIT,
    TCP,
    UDP,
    UDP_PORTS,
    V4,
    V6,
    Probe,
    echo_servers,
    exchanges,
    flows,
    netns_python,
    run_probes,
)

from netplug_env import NetplugHost
from runtimes import make_netns, require_commands, require_root

pytestmark = pytest.mark.netns

# After CONNTRACK (argv[1]: the entries it makes), deletes the entries of the addresses
# in argv[3] (JSON) through netplug.net.conntrack's forget (argv[2] "forget"),
# delete_dumped ("dumped") or a Deleter ("deleter": the agent's, waited for); prints
# the entries left as JSON.
MANGLE = (
    CONNTRACK
    + """\
from ipaddress import ip_address
from netplug.net import conntrack
from netplug.net.rtnl import Channel
addresses = [ip_address(a) for a in json.loads(sys.argv[3])]
if sys.argv[2] == "forget":
    conntrack.forget(addresses)
elif sys.argv[2] == "deleter":
    deleter = conntrack.Deleter()
    deleter.go()  # a DEL that had nothing to delete: no round may start later
    deleter.submit(addresses[:1], "test", start=False)  # a DEL's: held until go()
    assert not deleter.wait(addresses, 0.2)
    deleter.submit(addresses[1:], "test")
    assert deleter.wait(addresses, 30)
else:
    channel = Channel(conntrack.NETLINK_NETFILTER)
    for version in (4, 6):
        conntrack.delete_dumped(channel, version, [a for a in addresses if a.version == version])
print(json.dumps(left()))
"""
)

GONE = ("10.9.0.3", "fd09::3")
# (family, orig src, orig dst, proto, reply src, reply dst)
ENTRIES = [
    (V4, "10.9.0.3", "10.8.0.1", UDP, "10.8.0.1", "10.9.0.3"),  # from the address
    (V4, "10.8.0.1", "10.9.0.3", TCP, "10.9.0.3", "10.8.0.1"),  # to it
    (V4, "10.8.0.2", "192.0.2.1", TCP, "10.9.0.3", "10.8.0.2"),  # DNAT'd to it (reply only)
    (V4, "10.9.0.4", "10.8.0.1", UDP, "10.8.0.1", "10.9.0.4"),  # a neighbour's: kept
    (V4, "10.8.0.1", "10.9.0.30", TCP, "10.9.0.30", "10.8.0.1"),  # kept
    (V6, "fd09::3", "fd08::1", UDP, "fd08::1", "fd09::3"),
    (V6, "fd08::1", "fd09::3", TCP, "fd09::3", "fd08::1"),
    (V6, "fd08::2", "2001:db8::1", TCP, "fd09::3", "fd08::2"),
    (V6, "fd09::4", "fd08::1", UDP, "fd08::1", "fd09::4"),  # kept
    (V6, "fd08::1", "fd09::30", TCP, "fd09::30", "fd08::1"),  # kept
]
KEPT = sorted([list(e[1:3]) + list(e[4:6]) for e in ENTRIES if not set(e) & set(GONE)])


@pytest.mark.parametrize("how", ["forget", "dumped", "deleter"])
def test_exactly_the_entries_of_the_address_are_deleted(how: str) -> None:
    """``forget`` (a filtered flush for IPv4, a dump for IPv6), ``delete_dumped``
    (the way of kernels before 6.12) and the agent's ``Deleter`` delete the
    entries that have the address in either tuple, and no other."""
    require_root()
    with make_netns("npt-ct-") as ns:
        argv = netns_python(ns, MANGLE, json.dumps(ENTRIES), how, json.dumps(GONE))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == KEPT


# -- real traffic ---------------------------------------------------------------------

QUARANTINE = {"name": "quarantine", "network": "red", "select": {"names": ["denied"]},
              "ingress": []}  # fmt: skip
B_FROM_GREEN = {"name": "b-from-green", "network": "red", "select": {"names": ["b"]},
                "ingress": [{"from": [{"network": "green"}]}]}  # fmt: skip

# A TCP connection to argv[1]:8080 held open; at each stdin line, one segment sent and
# what came back within argv[2] seconds printed: "answer", "reset" or "silent".
HOLD = """\
import select, socket, sys
c = socket.create_connection((sys.argv[1], 8080), timeout=5)
assert c.recv(2) == b"hi"
print("ready", flush=True)
for line in sys.stdin:
    c.send(b"x")
    if not select.select([c], [], [], float(sys.argv[2]))[0]:
        print("silent", flush=True)
        continue
    try:
        print("answer" if c.recv(16) else "reset", flush=True)
    except ConnectionResetError:
        print("reset", flush=True)
"""


@contextmanager
def held_tcp(netns: str, address: str, wait: float) -> Iterator:
    """``segment()``: sends one segment on a TCP connection opened now, returns the
    outcome (``HOLD``)."""
    proc = subprocess.Popen(
        netns_python(netns, HOLD, address, str(wait)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready", "the TCP connection did not open"

        def segment() -> str:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            return proc.stdout.readline().strip()

        yield segment
    finally:
        proc.kill()
        proc.wait(timeout=10)


def conf(host: NetplugHost) -> dict:
    v4, v6 = SUBNETS["red"]
    return host.conf(name="red", subnet=v4, subnet6=v6)


def replace_b(host: NetplugHost, c: Containers, name: str, b_host: NetplugHost | None = None):
    """DEL ``b``; ADD a container ``name`` on ``b``'s IPv4 address (on ``b``'s host)."""
    b_host = b_host or host
    address = c.ip("b", 4)
    b_host.delete(conf(b_host), "b", c.ns("b"))
    c.add(b_host, name, "red", static=address)
    assert c.ip(name, 4) == address


def check_flow_cut(host: NetplugHost, c: Containers, log: Path, segment, name: str) -> None:
    """After ``b``'s replacement ``name``: the UDP flow gets no answer, the held TCP
    connection's next segment reaches nobody; ``name`` itself serves (the host's
    own traffic is never filtered)."""
    since = time.monotonic()
    time.sleep(FLOW_WAIT + 1.5)
    seen = exchanges(log, "udp", since + FLOW_WAIT + 0.05, 1e12)
    assert len(seen) >= 2, f"too few UDP exchanges: {seen}"
    # Both at once, so that a failure shows both (the TCP segment reaching it: "reset").
    outcome = {"udp answered": sum(seen), "tcp": segment()}
    assert outcome == {"udp answered": 0, "tcp": "silent"}, f"b's connections reached {name}"
    up = Probe(host.netns, "udp", c.ip(name, 4), 9090)
    assert run_probes([up]) == [True], f"{name} does not answer the host"


def one_host(stack: ExitStack, tmp_path: Path, agent: bool) -> tuple[NetplugHost, Containers]:
    """A netplug host (with its agent, or without), and its containers with echo
    servers; all undone by ``stack``."""
    require_root()
    require_commands("nft", packages="nftables")
    host = NetplugHost(stack.enter_context(make_netns("npt-host-")), tmp_path / "host")
    start = stack.enter_context(echo_servers())
    if agent:
        stack.enter_context(host.agent())
    return host, Containers(lambda: stack.enter_context(make_netns("npt-ctr-")), start)


@pytest.mark.parametrize("agent", [True, False], ids=["agent", "in-process"])
def test_a_reused_address_does_not_continue_its_predecessors_connections(
    tmp_path: Path, agent: bool
) -> None:
    """The client is on green, let into red's ``b`` through a policy hole, so its
    traffic is routed by the host (whose neighbour entry ADD points at the new
    container: on one bridge the client's own ARP cache would hide it for a while)."""
    with ExitStack() as stack:
        host, c = one_host(stack, tmp_path, agent)
        c.add(host, "client", "green")
        c.add(host, "b", "red")
        if agent:
            apply([host], [QUARANTINE, B_FROM_GREEN])
        else:  # programmed by the next ADD or DEL
            ctl(host, "policy", "apply", "-", stdin=json.dumps([QUARANTINE, B_FROM_GREEN]))
            c.add(host, "spare", "red")
        segment = stack.enter_context(held_tcp(c.ns("client"), c.ip("b", 4), 1.5))
        assert segment() == "answer"
        with flows([(c.ns("client"), c.ip("b", 4))], tmp_path) as (log,):
            time.sleep(0.5)
            assert all(exchanges(log, "udp", 0, 1e12)), "the flow to b was not answered"
            replace_b(host, c, "denied")
            check_flow_cut(host, c, log, segment, "denied")


# UDP from a fixed port to argv[1]:argv[2] every 10 ms for argv[3] seconds; prints
# the monotonic time of each answer.
SENDER = """\
import select, socket, sys, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        u.send(b"early")
    except OSError:  # the host's unreachable answers, while nobody has the address
        pass
    if select.select([u], [], [], 0.01)[0]:
        try:
            if u.recv(64):
                print(time.monotonic(), flush=True)
        except OSError:
            pass
"""


@pytest.mark.parametrize("agent", [True, False], ids=["agent", "in-process"])
def test_packets_sent_before_an_add_never_reach_its_denied_container(
    tmp_path: Path, agent: bool
) -> None:
    """A client keeps sending to an address nobody holds yet, in a block the host
    has: the host routes it, the table judges it as to nobody's (allowed) and
    the packet waits for the address's neighbour. A container the policy denies
    is then ADDed there: the waiting packets must not reach it, or its answer
    makes the flow an allowed connection for good (the ct mark's fast path)."""
    with ExitStack() as stack:
        host, c = one_host(stack, tmp_path, agent)
        c.add(host, "client", "open", isolate=False)  # open: not isolated from red
        c.add(host, "b", "red")  # red's block is on the host: its route too
        if agent:
            apply([host], [QUARANTINE])
        else:  # programmed by the next ADD or DEL
            ctl(host, "policy", "apply", "-", stdin=json.dumps(QUARANTINE))
        target = str(ip_address(c.ip("b", 4)) + 100)
        sender = subprocess.Popen(
            netns_python(c.ns("client"), SENDER, target, str(UDP_PORTS[0]), "5"),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert sender.stdout is not None and sender.stdout.readline().strip() == "ready"
            time.sleep(1.0)  # packets judged and waiting for the neighbour
            c.add(host, "denied", "red", static=target)
            answers, _ = sender.communicate(timeout=30)
        finally:
            sender.kill()
            sender.wait(timeout=10)
        assert answers.split() == [], "packets sent before the ADD reached the denied container"
        up = Probe(host.netns, "udp", target, UDP_PORTS[0])
        assert run_probes([up]) == [True], "denied does not answer the host"


def test_a_remote_address_that_leaves_a_set_loses_its_connections(
    lab_hosts, tmp_path: Path
) -> None:
    """The client's egress allows ``b`` only, and is judged on the client's host;
    ``b`` (on the other host) is replaced by ``other`` on its address: the client's
    host deletes the entries when ``b``'s address leaves the policy's peer set."""
    require_commands("nft", packages="nftables")
    hosts = lab_hosts(2)
    h1, h2 = hosts["host1"], hosts["host2"]
    egress = {"name": "client-out", "network": "red", "select": {"names": ["client"]},
              "egress": [{"to": [{"names": ["b"]}]}]}  # fmt: skip
    with ExitStack() as stack:
        start = stack.enter_context(echo_servers())
        c = Containers(lambda: stack.enter_context(make_netns("npt-ctr-")), start)
        c.add(h1, "client", "red")
        c.add(h2, "b", "red")
        apply([h1, h2], [egress])
        segment = stack.enter_context(held_tcp(c.ns("client"), c.ip("b", 4), 1.5))
        assert segment() == "answer"
        with flows([(c.ns("client"), c.ip("b", 4))], tmp_path) as (log,):
            time.sleep(0.5)
            assert all(exchanges(log, "udp", 0, 1e12)), "the flow to b was not answered"
            replace_b(h1, c, "other", b_host=h2)
            check_flow_cut(h2, c, log, segment, "other")


def test_del_succeeds_when_the_entries_cannot_be_deleted(tmp_path: Path) -> None:
    """A kernel that refuses the deletion (the ``conntrack`` fault) costs a logged
    warning, never the DEL: the container is detached and its address released."""
    require_root()
    require_commands("nft", packages="nftables")
    with ExitStack() as stack:
        host = NetplugHost(stack.enter_context(make_netns("npt-host-")), tmp_path / "host")
        c = Containers(lambda: stack.enter_context(make_netns("npt-ctr-")), lambda ns: None)
        c.add(host, "b", "red")
        faulty = {"NETPLUG_FAULTS": "conntrack"}
        done = host.call("DEL", conf(host), container_id="b", netns=c.ns("b"), env=faulty)
        assert (done.status, done.stdout) == (0, ""), done.stderr
        warned = f"conntrack entries of {c.ip('b', 4)}, {c.ip('b', 6)} not deleted"
        assert warned in done.stderr  # the plugin's logging: stderr (the runtime's log)
        c.add(host, "again", "red", static=c.ip("b", 4))  # released: free again
