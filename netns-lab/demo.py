"""``netns-lab demo``: three hosts, two containers on each, every container pings
every other across the VXLAN overlay, each looks the next one up by name
through its host's DNS, a short report, then everything goes.

The store is the embedded SQLite file: nothing to set up.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from itertools import permutations
from pathlib import Path

from netplug.lab.lab import BIN, Lab
from netplug.lab.namespaces import run

HOSTS = 3
PER_HOST = 2
PING_TRIES = 3


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f}s] {text}", flush=True)


def demo(state_dir: Path, store: str = "sqlite") -> int:
    say = Progress()
    lab = Lab(state_dir, say)
    try:
        lab.up(HOSTS, store)
        containers = {}
        for host in range(1, HOSTS + 1):
            for n in range(1, PER_HOST + 1):
                name = f"c{host}{n}"
                started = time.monotonic()
                containers[name] = lab.run_container(f"host{host}", name).split("/")[0]
                say(
                    f"container {name} on host{host}: {containers[name]} "
                    f"({(time.monotonic() - started) * 1000:.0f} ms)"
                )
        failed = _ping_matrix(lab, containers, say)
        failed += _lookups(lab, containers, say)
        state = lab.state.load()
        # From a lab host: etcd (with --store etcd) is only reachable inside the lab.
        report = run(
            "ip",
            "netns",
            "exec",
            state["hosts"]["host1"]["netns"],
            str(BIN / "netplugctl"),
            "--store",
            state["store"],
            "blocks",
        )
        print(report.stdout.decode())
        print(
            f"result: {len(containers) * (len(containers) - 1) - failed} of "
            f"{len(containers) * (len(containers) - 1)} cross-container pings answered"
        )
        return 1 if failed else 0
    finally:
        say("tearing down")
        lab.down()


def _ping_matrix(lab: Lab, containers: dict[str, str], say: Progress) -> int:
    pairs = list(permutations(containers, 2))

    def ping(pair: tuple[str, str]) -> bool:
        # A few tries: the newest host's peers may still be a moment from programmed.
        src, dst = pair
        for _ in range(PING_TRIES):
            done = run(
                "ip",
                "netns",
                "exec",
                lab.container_netns(src),
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                containers[dst],
                check=False,
            )
            if done.returncode == 0:
                return True
        return False

    with ThreadPoolExecutor(8) as pool:
        answered = list(pool.map(ping, pairs))
    for (src, dst), ok in zip(pairs, answered, strict=True):
        if not ok:
            say(f"ping {src} -> {dst} ({containers[dst]}): no answer")
    say(f"ping matrix: {sum(answered)}/{len(pairs)} answered")
    return answered.count(False)


def _lookups(lab: Lab, containers: dict[str, str], say: Progress) -> int:
    """Each container asks its host's netplugd (its gateway) for the next container's
    name, which lives on another host; returns how many got no or a wrong answer."""
    names = list(containers)
    wrong = 0
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
        ok = answer == containers[dst]
        wrong += not ok
        say(
            f"{src} asks for {dst}.lab.netplug.internal: {answer or 'no answer'}"
            + ("" if ok else f" (expected {containers[dst]})")
        )
    return wrong
