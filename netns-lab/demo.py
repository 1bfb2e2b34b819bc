"""``netns-lab demo``: one host, two containers, a ping each way, then teardown.

Runs the real executables the way a container runtime would: ``netplug`` is
exec'd inside the host's namespace with the CNI variables and the network
config on stdin, served by a real ``netplugd``. The store is the embedded
SQLite file in a temp dir: nothing to set up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from netplug.lab import namespaces
from netplug.lab.namespaces import State, run

BIN = Path(sys.executable).parent
AGENT_START_TIMEOUT = 10.0
CONTAINERS = ("web", "db")


class Progress:
    def __init__(self, total: int) -> None:
        self.step, self.total = 0, total

    def __call__(self, text: str) -> None:
        self.step += 1
        print(f"[{self.step}/{self.total}] {text}", flush=True)


def network_config(workdir: Path) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "demo",
        "type": "netplug",
        "subnet": "10.244.0.0/16",
        "ipMasq": True,
        "store": f"sqlite://{workdir}/netplug.db",
        "hostName": "host1",
        "logFile": f"{workdir}/netplug.log",
        "runDir": f"{workdir}/run",
    }


def cni(host: str, command: str, conf: dict, container: str, netns: str) -> dict | None:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_IFNAME": "eth0",
        "CNI_NETNS": namespaces.path(netns),
        "CNI_ARGS": f"NETPLUG_NAME={container}",
        "CNI_PATH": str(BIN),
    }
    done = run(
        "ip",
        "netns",
        "exec",
        host,
        str(BIN / "netplug"),
        input=json.dumps(conf).encode(),
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command} {container} failed: {done.stdout.decode()}")
    return json.loads(done.stdout) if done.stdout.strip() else None


def start_agent(host: str, conf: dict, workdir: Path, state: State) -> subprocess.Popen:
    log = open(workdir / "netplugd.log", "wb")  # noqa: SIM115 - the agent keeps writing it
    agent = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            host,
            str(BIN / "netplugd"),
            "--store",
            conf["store"],
            "--host-name",
            conf["hostName"],
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    state.add(agent.pid, f"netplugd of {host}")
    deadline = time.monotonic() + AGENT_START_TIMEOUT
    while b"serving host" not in (workdir / "netplugd.log").read_bytes():
        if agent.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"netplugd did not start: {(workdir / 'netplugd.log').read_text()}")
        time.sleep(0.02)
    return agent


def demo(state_dir: Path) -> int:
    progress = Progress(6)
    state = State(state_dir)
    # The temp dir outlives the cleanup stack: DEL still writes the log and the store.
    with tempfile.TemporaryDirectory(prefix="netplug-lab-") as tmp, ExitStack() as cleanup:
        workdir = Path(tmp)
        conf = network_config(workdir)
        host = namespaces.create("host1")
        cleanup.callback(namespaces.delete, host)
        progress(f"host namespace {host}, store {conf['store']}")
        agent = start_agent(host, conf, workdir, state)
        cleanup.callback(_stop, agent, state)
        progress(f"netplugd serving {host} (pid {agent.pid})")
        addresses = {}
        for name in CONTAINERS:
            netns = namespaces.create(name)
            cleanup.callback(namespaces.delete, netns)
            started = time.monotonic()
            result = cni(host, "ADD", conf, name, netns)
            cleanup.callback(cni, host, "DEL", conf, name, netns)
            ip = result["ips"][0]
            addresses[name] = ip["address"].split("/")[0]
            progress(
                f"container {name}: {ip['address']} via {ip['gateway']} "
                f"({(time.monotonic() - started) * 1000:.0f} ms)"
            )
        ok = _pings(addresses)
        progress("ping web -> db: " + ("ok" if ok else "FAILED"))
        print(run(str(BIN / "netplugctl"), "--store", conf["store"], "allocations").stdout.decode())
        print("teardown: DEL each container, stop netplugd, remove namespaces", flush=True)
    return 0 if ok else 1


def _pings(addresses: dict[str, str]) -> bool:
    web, db = (namespaces.PREFIX + name for name in CONTAINERS)
    there = run(
        "ip", "netns", "exec", web, "ping", "-c", "2", "-W", "2", addresses["db"], check=False
    )
    back = run(
        "ip", "netns", "exec", db, "ping", "-c", "2", "-W", "2", addresses["web"], check=False
    )
    return there.returncode == 0 and back.returncode == 0


def _stop(agent: subprocess.Popen, state: State) -> None:
    agent.terminate()
    try:
        agent.wait(timeout=10)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait(timeout=10)
    state.kill_all()
