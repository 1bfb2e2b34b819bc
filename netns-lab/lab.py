"""A netplug cluster on one box: a fabric namespace holding the underlay bridge,
and hosts joined to it by veth, each with its own agent and conflist.

    nplab-fabric   bridge fabric0 192.0.2.1/24 (and etcd, with --store etcd)
    nplab-hostN    under0 192.0.2.(10+N)/24, default route via 192.0.2.1, netplugd
    nplab-c-NAME   a container, attached to its host by the real plugin

Only documentation addresses (192.0.2.0/24) are used on the underlay, and
nothing outside the lab's namespaces is touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from netplug.ipam.store.base import Store
from netplug.lab import namespaces
from netplug.lab.namespaces import COMMAND_TIMEOUT, State, empty_state, run, start_time, stop

BIN = Path(sys.executable).parent
FABRIC = "fabric"
FABRIC_ADDRESS = "192.0.2.1"
SUBNET = "10.244.0.0/16"
START_TIMEOUT = 15.0
ETCD_PORT = 2379
# Short, so that a host whose agent is gone leaves the overlay within seconds.
AGENT_LEASE_TTL = 5


def host_address(index: int) -> str:
    return f"192.0.2.{10 + index}"


class Lab:
    def __init__(
        self, state_dir: Path, say: Callable[[str], None] = print, prefix: str = namespaces.PREFIX
    ) -> None:
        self.dir = state_dir
        self.state = State(state_dir)
        self.say = say
        self.prefix = prefix
        self.fabric = prefix + FABRIC

    # -- up ------------------------------------------------------------------

    def up(self, hosts: int, store: str) -> None:
        if self.state.load()["hosts"]:
            raise RuntimeError("a lab is already up: run 'netns-lab down' first")
        fabric = namespaces.create(self.fabric)
        run("ip", "-n", fabric, "link", "add", "fabric0", "type", "bridge")
        run("ip", "-n", fabric, "addr", "add", f"{FABRIC_ADDRESS}/24", "dev", "fabric0")
        run("ip", "-n", fabric, "link", "set", "fabric0", "up")
        self.say(f"fabric namespace {fabric}: bridge fabric0 {FABRIC_ADDRESS}/24")
        url = self._start_store(store)
        with self.state.update() as state:
            state["store"] = url
        for index in range(1, hosts + 1):
            self.add_host(index)

    def _start_store(self, kind: str) -> str:
        if kind == "sqlite":
            url = f"sqlite://{self.dir}/netplug.db"
            self.say(f"store: embedded SQLite at {self.dir}/netplug.db")
            return url
        return self.start_etcd()

    def start_etcd(self) -> str:
        """etcd in the fabric namespace (its data kept across restarts); its URL."""
        data = self.dir / "etcd"
        client = f"http://{FABRIC_ADDRESS}:{ETCD_PORT}"
        proc = self._spawn(
            self.fabric,
            "etcd",
            [
                "etcd",
                "--name",
                "lab",
                "--data-dir",
                str(data),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                f"http://{FABRIC_ADDRESS}:2380",
                "--initial-advertise-peer-urls",
                f"http://{FABRIC_ADDRESS}:2380",
                "--initial-cluster",
                f"lab=http://{FABRIC_ADDRESS}:2380",
            ],
        )
        url = f"etcd://{FABRIC_ADDRESS}:{ETCD_PORT}"
        self._wait_for_store(url, proc)
        self.say(f"store: etcd in {self.fabric} at {url} (pid {proc.pid})")
        return url

    @contextlib.contextmanager
    def store(self) -> Iterator[Store]:
        """The lab's store, used from where it is reachable: the body runs with this
        thread in the fabric namespace (etcd listens there), so keep it to store calls."""
        from netplug.ipam.store.url import open_store
        from netplug.net import netns

        url = self.state.load()["store"]
        with netns.entered(namespaces.path(self.fabric)):
            opened = open_store(url)
            try:
                yield opened
            finally:
                opened.close()

    def stop_etcd(self) -> None:
        """Stop the lab's etcd (a store outage for every host)."""
        for proc in self.state.load()["processes"]:
            if proc["what"] == "etcd":
                stop(proc["pid"], proc["start"])

    def _wait_for_store(self, url: str, proc: subprocess.Popen) -> None:
        from netplug.ipam.store.base import StoreError
        from netplug.ipam.store.url import open_store
        from netplug.net import netns

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                # etcd listens inside the fabric namespace: reach it from in there.
                with netns.entered(namespaces.path(self.fabric)):
                    store = open_store(url)
                    store.status()
                    store.close()
                return
            except StoreError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"etcd did not come up; see {self.dir}/etcd.log") from None
                time.sleep(0.1)

    def add_host(self, index: int) -> str:
        state = self.state.load()
        name = f"host{index}"
        netns = namespaces.create(self.prefix + name)
        fabric = self.fabric
        run(
            "ip",
            "-n",
            netns,
            "link",
            "add",
            "under0",
            "type",
            "veth",
            "peer",
            "name",
            name,
            "netns",
            fabric,
        )
        run("ip", "-n", fabric, "link", "set", name, "master", "fabric0", "up")
        run("ip", "-n", netns, "addr", "add", f"{host_address(index)}/24", "dev", "under0")
        run("ip", "-n", netns, "link", "set", "under0", "up")
        run("ip", "-n", netns, "route", "add", "default", "via", FABRIC_ADDRESS)
        home = self.dir / name
        home.mkdir(parents=True, exist_ok=True)
        self._write_conflist(home, name, state["store"])
        with self.state.update() as changed:
            changed["hosts"][name] = {"netns": netns, "address": host_address(index)}
        pid = self.start_agent(name)
        self.say(f"host {name}: {netns}, underlay {host_address(index)}, netplugd pid {pid}")
        return name

    def start_agent(self, host: str) -> int:
        """Start ``host``'s netplugd and wait until it serves; returns its PID."""
        state = self.state.load()
        log = self.dir / f"{host}/netplugd.log"
        log.unlink(missing_ok=True)
        argv = [
            str(BIN / "netplugd"),
            "--store",
            state["store"],
            "--host-name",
            host,
            "--run-dir",
            str(self.dir / host / "run"),
            "--lease-ttl",
            str(AGENT_LEASE_TTL),
            # The lab has no way out of its namespaces: names outside the zone fail fast.
            "--upstream",
            "none",
        ]
        proc = self._spawn(state["hosts"][host]["netns"], f"{host}/netplugd", argv)
        self._wait_for_line(log, "serving host", proc)
        return proc.pid

    def stop_agent(self, host: str, *, kill: bool = False) -> None:
        """Stop ``host``'s netplugd (SIGKILL with ``kill``, as a crash would)."""
        for proc in self.state.load()["processes"]:
            if proc["what"] == f"{host}/netplugd" and start_time(proc["pid"]) == proc["start"]:
                if not kill:
                    stop(proc["pid"], proc["start"])
                    continue
                os.kill(proc["pid"], signal.SIGKILL)
                while start_time(proc["pid"]) == proc["start"]:
                    time.sleep(0.01)

    def _write_conflist(self, home: Path, host: str, store: str) -> None:
        conflist = {
            "cniVersion": "1.0.0",
            "name": "lab",
            "plugins": [
                {
                    "type": "netplug",
                    "subnet": SUBNET,
                    "store": store,
                    "hostName": host,
                    "ipMasq": True,
                    "logFile": str(home / "netplug.log"),
                    "runDir": str(home / "run"),
                    "capabilities": {"aliases": True},
                }
            ],
        }
        (home / "net.d").mkdir(exist_ok=True)
        (home / "net.d" / "50-lab.conflist").write_text(json.dumps(conflist, indent=2))

    def _spawn(self, netns: str, what: str, argv: list[str]) -> subprocess.Popen:
        log = self.dir / f"{what}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as sink:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", netns, *argv],
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self.state.update() as state:
            state["processes"].append(
                {"pid": proc.pid, "start": _wait_start(proc.pid), "what": what}
            )
        return proc

    @staticmethod
    def _wait_for_line(log: Path, text: str, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while text not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{log.stem} did not start: {log.read_text()[-500:]}")
            time.sleep(0.02)

    # -- containers ------------------------------------------------------------

    def cni(self, command: str, container: str, host: str) -> dict | None:
        state = self.state.load()
        conflist = json.loads((self.dir / host / "net.d" / "50-lab.conflist").read_text())
        conf = {
            "cniVersion": conflist["cniVersion"],
            "name": conflist["name"],
            **conflist["plugins"][0],
        }
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container,
            "CNI_IFNAME": "eth0",
            "CNI_NETNS": namespaces.path(self.prefix + f"c-{container}"),
            "CNI_ARGS": f"IgnoreUnknown=1;NETPLUG_NAME={container}",
            "CNI_PATH": str(BIN),
        }
        done = run(
            "ip",
            "netns",
            "exec",
            state["hosts"][host]["netns"],
            str(BIN / "netplug"),
            input=json.dumps(conf).encode(),
            env=env,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command} {container} on {host}: {done.stdout.decode()}")
        return json.loads(done.stdout) if done.stdout.strip() else None

    def run_container(self, host: str, name: str) -> str:
        state = self.state.load()
        if host not in state["hosts"]:
            raise RuntimeError(f"no host {host}: hosts are {', '.join(state['hosts'])}")
        if name in state["containers"]:
            raise RuntimeError(f"container {name} exists already")
        netns = namespaces.create(self.prefix + f"c-{name}")
        try:
            result = self.cni("ADD", name, host)
        except BaseException:
            namespaces.delete(netns)
            raise
        address = result["ips"][0]["address"]
        with self.state.update() as changed:
            changed["containers"][name] = {"host": host, "netns": netns, "address": address}
        return address

    def remove_container(self, name: str) -> None:
        """DEL the container and delete its namespace."""
        container = self.state.load()["containers"][name]
        self.cni("DEL", name, container["host"])
        namespaces.delete(container["netns"])
        with self.state.update() as changed:
            del changed["containers"][name]

    def container_netns(self, name: str) -> str:
        containers = self.state.load()["containers"]
        if name not in containers:
            raise RuntimeError(f"no container {name}: containers are {', '.join(containers)}")
        return containers[name]["netns"]

    # -- down ------------------------------------------------------------------

    def down(self) -> None:
        state = self.state.load()
        for name, container in state["containers"].items():
            try:
                self.cni("DEL", name, container["host"])
            except (RuntimeError, subprocess.TimeoutExpired, KeyError, OSError) as e:
                self.say(f"DEL {name}: {e} (continuing)")
        for proc in reversed(state["processes"]):
            if stop(proc["pid"], proc["start"]):
                self.say(f"stopped {proc['what']} (pid {proc['pid']})")
        for netns in namespaces.lab_namespaces(self.prefix):
            namespaces.delete(netns)
            self.say(f"removed namespace {netns}")
        with self.state.update() as changed:
            changed.clear()
            changed.update(empty_state())
        subprocess.run(["rm", "-rf", str(self.dir)], check=False, timeout=COMMAND_TIMEOUT)


def _wait_start(pid: int) -> str | None:
    for _ in range(100):
        started = start_time(pid)
        if started is not None:
            return started
        time.sleep(0.01)
    return None
