"""The VXLAN overlay across lab hosts: reachability, MTU, joins, leaves, agent crashes."""

from __future__ import annotations

import select
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import permutations

import pytest

from netplug.lab.lab import Lab

from netplug_env import CONVERGENCE, eventually
from runtimes import run

pytestmark = pytest.mark.netns


def up(lab: Lab, hosts: int, per_host: int = 1) -> dict[str, str]:
    lab.up(hosts, lab.store_kind)
    return {
        f"c{h}{n}": lab.run_container(f"host{h}", f"c{h}{n}").split("/")[0]
        for h in range(1, hosts + 1)
        for n in range(1, per_host + 1)
    }


def ping(lab: Lab, src: str, address: str, *extra: str) -> bool:
    cmd = ["ip", "netns", "exec", lab.container_netns(src), "ping", "-c", "1", "-W", "1", *extra]
    return subprocess.run([*cmd, address], capture_output=True, timeout=10).returncode == 0


def routes(lab: Lab, host: str) -> str:
    return run(["ip", "-n", lab.state.load()["hosts"][host]["netns"], "route"]).stdout


def test_every_container_pings_every_other_across_three_hosts(lab):
    containers = up(lab, 3, per_host=2)
    pairs = list(permutations(containers, 2))
    with ThreadPoolExecutor(8) as pool:
        answered = list(
            pool.map(lambda p: eventually(lambda: ping(lab, p[0], containers[p[1]])), pairs)
        )
    assert all(answered), [p for p, ok in zip(pairs, answered, strict=True) if not ok]


def test_overlay_mtu_lets_full_frames_through_and_fragments_udp(lab):
    containers = up(lab, 2)
    # 1422 bytes of ICMP payload + 28 of headers = 1450, the overlay MTU (1500 - 50).
    assert eventually(lambda: ping(lab, "c11", containers["c21"], "-M", "do", "-s", "1422"))
    assert not ping(lab, "c11", containers["c21"], "-M", "do", "-s", "1423")
    receiver = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            lab.container_netns("c21"),
            "/usr/bin/python3",
            "-c",
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.bind(('0.0.0.0', 9999)); s.settimeout(10); print('bound', flush=True); "
            "print(len(s.recv(65535)))",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        # Send only once the receiver is bound; it waits up to 10 s for the datagram.
        ready = select.select([receiver.stdout], [], [], 15)[0]
        assert ready and receiver.stdout.readline().strip() == "bound"
        sender = (
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.sendto(b'x' * 1472, ('{containers['c21']}', 9999))"
        )
        run(["ip", "netns", "exec", lab.container_netns("c11"), "/usr/bin/python3", "-c", sender])
        out, _ = receiver.communicate(timeout=15)
    finally:
        receiver.kill()
        receiver.wait()
    assert out.strip() == "1472"


def test_a_new_host_is_reachable_without_restarting_anything(lab):
    containers = up(lab, 2)
    pids_before = [p["pid"] for p in lab.state.load()["processes"]]
    lab.add_host(3)
    new = lab.run_container("host3", "c31").split("/")[0]
    assert eventually(lambda: ping(lab, "c11", new), timeout=CONVERGENCE)
    assert eventually(lambda: ping(lab, "c31", containers["c21"]), timeout=CONVERGENCE)
    assert [p["pid"] for p in lab.state.load()["processes"]][: len(pids_before)] == pids_before


def test_a_host_that_leaves_is_removed_from_the_others(lab):
    containers = up(lab, 3)
    block = containers["c31"].rsplit(".", 1)[0] + ".0/24"
    assert eventually(lambda: block in routes(lab, "host1"))
    lab.stop_agent("host3")  # its lease (5 s in the lab) runs out
    assert eventually(lambda: block not in routes(lab, "host1"), timeout=15)
    host1 = lab.state.load()["hosts"]["host1"]["netns"]
    # Routes go first, then neighbours, then FDB entries: poll for the last.
    fdb = ["ip", "netns", "exec", host1, "bridge", "fdb", "show"]
    assert eventually(lambda: "192.0.2.13" not in run(fdb).stdout, timeout=5)
    assert eventually(lambda: ping(lab, "c11", containers["c21"]))  # the others are untouched


def test_agent_crash_and_restart_keeps_traffic_and_drops_stale_peers(lab):
    containers = up(lab, 2)
    assert eventually(lambda: ping(lab, "c11", containers["c21"]))
    host1 = lab.state.load()["hosts"]["host1"]["netns"]
    stale = [
        "ip",
        "-n",
        host1,
        "route",
        "add",
        "10.244.250.0/24",
        "via",
        "10.244.250.0",
        "dev",
        "npvx4242",
        "onlink",
    ]
    run(stale)
    pinger = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            lab.container_netns("c11"),
            "ping",
            "-i",
            "0.1",
            "-c",
            "60",
            "-W",
            "1",
            containers["c21"],
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1)
        lab.stop_agent("host1", kill=True)
        lab.start_agent("host1")
        out, _ = pinger.communicate(timeout=30)
    finally:
        pinger.kill()
    received = int(out.split(" received")[0].rsplit(" ", 1)[1])
    assert received >= 50, out  # at most a second (10 probes) lost
    assert eventually(lambda: "10.244.250.0/24" not in routes(lab, "host1"), timeout=15)


def test_concurrent_adds_on_three_hosts_share_one_store_without_duplicates(lab):
    lab.up(3, lab.store_kind)

    def start(i: int) -> str:
        return lab.run_container(f"host{i % 3 + 1}", f"p{i}")

    with ThreadPoolExecutor(12) as pool:
        addresses = list(pool.map(start, range(24)))
    assert len(set(addresses)) == 24
    blocks = {a.rsplit(".", 1)[0] for a in addresses}
    assert len(blocks) == 3  # one block per host
