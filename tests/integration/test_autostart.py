"""The agent is always there: the first ADD on a host without netplugd starts one
(autostart.py), which serves that call and every later one, and answers DNS; one
agent however many first ADDs run at once; none when the config turns it off, for
the other commands, or when it cannot start (the ADD then runs in-process)."""

from __future__ import annotations

import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from netplug_env import agents_in, eventually

pytestmark = pytest.mark.netns

ON = {"agent": {"autostart": True}}
STARTED = "started netplugd (pid "
COULD_NOT = "netplugd could not be started for host node-1"
PARALLEL = 100


def resolve(netns: str, server: str, name: str) -> str:
    cmd = ["ip", "netns", "exec", netns, "dig", f"@{server}", "+tries=1", "+time=1", "+short"]
    return subprocess.run([*cmd, name], capture_output=True, text=True, timeout=10).stdout.strip()


def named(name: str) -> dict[str, str]:
    return {"CNI_ARGS": f"NETPLUG_NAME={name}"}


def test_the_first_add_starts_the_agent_which_serves_calls_and_names(plain_host, containers):
    conf = plain_host.conf(**ON)
    alpha, beta = containers(), containers()
    with plain_host.started_agents():
        first = plain_host.add(conf, "alpha", alpha, env=named("alpha"))
        pid = plain_host.started_agent_pid()
        assert pid is not None and agents_in(plain_host.netns) == [pid]
        assert os.readlink(f"/proc/{pid}/cwd") == "/"  # holds no runtime's directory
        assert plain_host.log_file.read_text().count(STARTED) == 1
        second = plain_host.add(conf, "beta", beta, env=named("beta"))
        assert agents_in(plain_host.netns) == [pid]  # outlived the plugins that started it
        served = plain_host.started_agent_log()
        for cid in ("alpha", "beta"):  # the first call too was handed to it
            assert f"ADD container={cid} ifname=eth0 network=blue ok" in served, served

        gateway = first["ips"][0]["gateway"]
        beta_ip = second["ips"][0]["address"].split("/")[0]
        assert eventually(lambda: resolve(alpha, gateway, "beta.blue.netplug.internal") == beta_ip)
        plain_host.delete(conf, "alpha", alpha)
        plain_host.delete(conf, "beta", beta)
        assert "DEL container=beta ifname=eth0 network=blue ok" in plain_host.started_agent_log()
        assert plain_host.veths() == set()
    assert agents_in(plain_host.netns) == []


def test_a_hundred_first_adds_at_once_start_exactly_one_agent(plain_host, containers):
    conf = plain_host.conf(**ON)
    with ThreadPoolExecutor(16) as pool:
        ctrs = list(pool.map(lambda _: containers(), range(PARALLEL)))
    ids = [f"first-{i:03d}" for i in range(PARALLEL)]

    def call(command: str, i: int):
        return plain_host.call(command, conf, container_id=ids[i], netns=ctrs[i], timeout=60)

    with plain_host.started_agents(), ThreadPoolExecutor(PARALLEL) as pool:
        adds = list(pool.map(lambda i: call("ADD", i), range(PARALLEL)))
        assert [o.status for o in adds] == [0] * PARALLEL, [o.stdout for o in adds if o.status]
        assert agents_in(plain_host.netns) == [plain_host.started_agent_pid()]
        log = plain_host.log_file.read_text()
        assert log.count(STARTED) == 1 and COULD_NOT not in log, log
        served = plain_host.started_agent_log().count("ADD container=first-")
        assert served == PARALLEL  # every call waited for the one agent, none ran alone
        dels = list(pool.map(lambda i: call("DEL", i), range(PARALLEL)))
        assert [o.status for o in dels] == [0] * PARALLEL
    assert plain_host.veths() == set()


def test_only_an_add_starts_an_agent_and_only_when_the_config_allows(plain_host, containers):
    on, off = plain_host.conf("1.1.0", **ON), plain_host.conf()
    ctr = containers()
    # DEL, CHECK, GC and STATUS run in-process: a host being emptied grows no daemon.
    assert plain_host.call("STATUS", on, ifname=None).status == 0
    assert plain_host.call("DEL", on, container_id="gone", netns=ctr).status == 0
    assert plain_host.call("CHECK", on, container_id="gone", netns=ctr).status != 0
    gc = {**on, "cni.dev/valid-attachments": []}
    assert plain_host.call("GC", gc, ifname=None).status == 0
    with plain_host.started_agents():
        plain_host.add(off, "quiet", ctr)
        assert agents_in(plain_host.netns) == []
    assert not plain_host.started_agent_dir.joinpath("netplugd.lock").exists()
    assert plain_host.started_agent_pid() is None
    assert STARTED not in plain_host.log_file.read_text()


def test_an_agent_that_cannot_start_leaves_the_add_to_the_plugin(plain_host, containers):
    conf = plain_host.conf(**ON)
    first, second = containers(), containers()
    with plain_host.started_agents():
        plain_host.add(conf, "first", first, env={"NETPLUG_FAULTS": "agent-start"})
        assert agents_in(plain_host.netns) == []
        log = plain_host.log_file.read_text()
        assert f"{COULD_NOT} (it exited with status 1" in log, log
        assert "ADD container=first ifname=eth0 network=blue ok" in log
        assert "injected failure in agent-start" in plain_host.started_agent_log()
        # The next ADD does not wait for another failing start (BACKOFF).
        plain_host.add(conf, "second", second)
        assert agents_in(plain_host.netns) == []
        assert "it failed to start 10 s ago or less" in plain_host.log_file.read_text()
        assert plain_host.started_agent_log().count("refusing to start") == 1


@pytest.mark.parametrize("host_name", ["node-1", "node-2"], ids=["same-host", "other-host"])
def test_a_running_agent_is_found_first_and_none_is_started_beside_it(
    plain_host, containers, host_name
):
    """An agent already running (as the systemd unit runs it) serves the call; one
    that serves another hostName declines it, and the call runs in-process: either
    way no second agent is started (one socket per namespace)."""
    conf = plain_host.conf(hostName=host_name, **ON)
    with plain_host.started_agents(), plain_host.agent() as unit:
        plain_host.add(conf, "c1", containers())
        assert agents_in(plain_host.netns) == []  # only the unit-style agent runs
        assert unit.poll() is None
        assert STARTED not in plain_host.log_file.read_text()
        served = "ADD container=c1 ifname=eth0 network=blue ok" in plain_host.agent_log()
        assert served == (host_name == "node-1")


def test_an_agents_child_before_its_exec_is_not_a_second_agent(plain_host):
    """An agent's child between fork and exec (the enforcer runs nft) bears the
    agent's command line: it once made the first test count two agents."""
    forks = "import os, time\nos.fork()\ntime.sleep(30)"
    argv = ["ip", "netns", "exec", plain_host.netns, "python3", "-c", forks, "netplug.agent.daemon"]
    parent = subprocess.Popen(argv, start_new_session=True)
    children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")

    def cmdline(pid: int | str) -> bytes:
        return Path(f"/proc/{pid}/cmdline").read_bytes()

    def forked() -> bool:  # python runs (ip exec'd it) and its child bears its command line
        kids = children.read_text().split()
        return len(kids) == 1 and cmdline(kids[0]) == cmdline(parent.pid)

    try:
        assert eventually(forked, timeout=5)
        assert agents_in(plain_host.netns) == [parent.pid]
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
