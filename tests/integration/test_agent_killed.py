"""netplugd killed (SIGKILL) around plugin calls: what a DEL answered is done,
and a call in flight fails with a message that says so, in the log file."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from netplug_env import BIN, eventually
from runtimes import netns_path, run

pytestmark = pytest.mark.netns

BURST = 30


def interfaces(netns: str) -> set[str]:
    """The links in a container namespace, loopback aside."""
    out = run(["ip", "-n", netns, "-j", "link", "show"]).stdout
    return {link["ifname"] for link in json.loads(out)} - {"lo"}


def test_a_del_that_answered_left_nothing_for_a_killed_agent(plain_host, containers):
    """DEL used to answer first and delete the veth pair in a thread afterwards:
    an agent killed right after a burst of DELs left most pairs behind, their
    addresses already released, and an ADD into the same namespace got 102."""
    conf = plain_host.conf()
    ctrs = [containers() for _ in range(BURST)]
    ids = [f"kill-{i:02d}" for i in range(BURST)]

    def call(command: str, i: int):
        return plain_host.call(command, conf, container_id=ids[i], netns=ctrs[i])

    with plain_host.agent() as agent, ThreadPoolExecutor(BURST) as pool:
        assert [o.status for o in pool.map(lambda i: call("ADD", i), range(BURST))] == [0] * BURST
        assert len(plain_host.veths()) == BURST
        dels = list(pool.map(lambda i: call("DEL", i), range(BURST)))
        agent.send_signal(signal.SIGKILL)  # at once: no time for work left after the answers
        agent.wait(10)
    assert [(o.status, o.stdout) for o in dels] == [(0, "")] * BURST
    assert plain_host.veths() == set()
    assert [interfaces(ctr) for ctr in ctrs] == [set()] * BURST
    assert plain_host.records("/netplug/attachments/") == {}
    again = plain_host.call("ADD", conf, container_id="again", netns=ctrs[0])  # no agent now
    assert again.status == 0, again.stdout
    assert interfaces(ctrs[0]) == {"eth0"}


def test_a_call_in_flight_when_the_agent_dies_says_so_and_is_logged(plain_host, containers):
    """The agent's ADD waits for the store's write lock (held here), and the agent
    is killed meanwhile: the plugin answers code 11 naming what happened, at once,
    and logs the failed call to the config's logFile."""
    conf = plain_host.conf()
    with plain_host.agent() as agent:
        ctr = containers()
        holder = sqlite3.connect(plain_host.db, timeout=10)
        try:
            holder.execute("BEGIN IMMEDIATE")  # the agent's ADD waits for this (3 s)
            plugin = subprocess.Popen(
                ["ip", "netns", "exec", plain_host.netns, str(BIN / "netplug")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={
                    "CNI_COMMAND": "ADD",
                    "CNI_CONTAINERID": "inflight",
                    "CNI_NETNS": str(netns_path(ctr)),
                    "CNI_IFNAME": "eth0",
                    "CNI_PATH": "/usr/lib/cni",
                },
            )
            try:
                assert plugin.stdin is not None
                plugin.stdin.write(json.dumps(conf).encode())
                plugin.stdin.close()
                assert eventually(lambda: _calls_in_agent(plain_host.netns) > 0, timeout=5)
                agent.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                plugin.wait(15)  # its output is one small JSON document: no pipe to drain
                answered_after = time.monotonic() - killed
                assert plugin.stdout is not None
                stdout = plugin.stdout.read()
            finally:
                if plugin.poll() is None:
                    plugin.kill()
                    plugin.wait(5)
        finally:
            holder.rollback()
            holder.close()
    error = json.loads(stdout)
    assert plugin.returncode == 1
    assert error["code"] == 11
    assert error["msg"].startswith("netplugd went away during the call ("), error
    assert "try again" in error["msg"]
    assert answered_after < 2  # not after a 5 or 10 s timeout
    logged = plain_host.log_file.read_text()
    assert "ADD container=inflight ifname=eth0 network=blue error 11: netplugd went away" in logged


def _calls_in_agent(netns: str) -> int:
    """Connections the agent holds on @netplugd besides its listening socket."""
    out = run(["ip", "netns", "exec", netns, "ss", "-x", "-H", "state", "connected"]).stdout
    return sum(1 for line in out.splitlines() if "@netplugd" in line)
