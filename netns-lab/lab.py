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
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from netplug.ipam.store.base import Store
from netplug.lab import namespaces, underlay
from netplug.lab.namespaces import (
    COMMAND_TIMEOUT,
    State,
    empty_state,
    run,
    start_time,
    stop,
    stop_all,
)

BIN = Path(sys.executable).parent
FABRIC = "fabric"
FABRIC_ADDRESS = "192.0.2.1"
NETWORK = "lab"
SUBNET = "10.244.0.0/16"
# Networks added without --subnet get the first of these that no network overlaps.
FREE_SUBNETS = [f"10.{n}.0.0/16" for n in (*range(245, 256), *range(1, 244))]
# A network name becomes a DNS label (NAME.<network>.netplug.internal) and a bridge name.
NETWORK_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
# Agents started at once by `up`: each is a Python process starting, and the box has
# two cores; more at once only makes every one of them slower to serve.
HOST_PARALLEL = 4
START_TIMEOUT = 15.0
ETCD_PORT = 2379
# Short, so that a host whose agent is gone leaves the overlay within seconds.
AGENT_LEASE_TTL = 5
ETCD_HEARTBEAT_MS, ETCD_ELECTION_MS = 50, 500  # a cluster's raft timers (one box, loaded)


def etcd_address(index: int, members: int) -> str:
    """Member ``index``'s address: the fabric's for a lone member, else 192.0.2.2 on
    (each member of a cluster in a namespace of its own, joined to the fabric)."""
    return FABRIC_ADDRESS if members == 1 else f"192.0.2.{2 + index}"


def etcd_name(index: int, members: int) -> str:
    return "lab" if members == 1 else f"lab{index + 1}"


def etcd_index(what: str) -> int | None:
    """The member index of a process record named ``etcd`` or ``etcdN``; None otherwise."""
    if what == "etcd":
        return 0
    digits = what.removeprefix("etcd")
    return int(digits) - 1 if what.startswith("etcd") and digits.isdigit() else None


def etcd_url(members: int) -> str:
    """The store URL listing every member: the conflists and agents carry them all."""
    return "etcd://" + ",".join(f"{etcd_address(i, members)}:{ETCD_PORT}" for i in range(members))


def _member_status(gateway) -> tuple[int, int] | None:
    """(member id, leader id) as one member reports them; None if it does not answer."""
    from netplug.ipam.store.base import StoreError
    from netplug.ipam.store.etcd_gateway import EtcdError

    try:
        reply = gateway.call("maintenance/status", {}, idempotent=True)
    except (EtcdError, StoreError):
        return None
    finally:
        gateway.close()
    return int(reply["header"]["member_id"]), int(reply.get("leader", 0) or 0)


def host_address(index: int) -> str:
    return f"192.0.2.{10 + index}"


class Lab:
    etcd_members = 1  # members of the lab's etcd (``up --etcd-members``)
    agent_args: tuple[str, ...] = ()  # more netplugd flags, for agents this process starts

    def __init__(
        self, state_dir: Path, say: Callable[[str], None] = print, prefix: str = namespaces.PREFIX
    ) -> None:
        self.dir = state_dir
        self.state = State(state_dir)
        self.say = say
        self.prefix = prefix
        self.fabric = prefix + FABRIC

    # -- up ------------------------------------------------------------------

    def up(self, hosts: int, store: str, parallel: int = HOST_PARALLEL) -> None:
        if self.state.load()["hosts"]:
            raise RuntimeError("a lab is already up: run 'netns-lab down' first")
        fabric = namespaces.create(self.fabric)
        fabric_mac = underlay.mac(FABRIC_ADDRESS)
        run("ip", "-n", fabric, "link", "add", "fabric0", "address", fabric_mac, "type", "bridge")
        run("ip", "-n", fabric, "addr", "add", f"{FABRIC_ADDRESS}/24", "dev", "fabric0")
        run("ip", "-n", fabric, "link", "set", "fabric0", "up")
        self.say(f"fabric namespace {fabric}: bridge fabric0 {FABRIC_ADDRESS}/24")
        url = self._start_store(store)
        with self.state.update() as state:
            state["store"] = url
            state["networks"] = {NETWORK: {"subnet": SUBNET, "isolate": True}}
        self.add_hosts(range(1, hosts + 1), parallel)

    def add_hosts(self, indexes: Iterable[int], parallel: int = HOST_PARALLEL) -> None:
        """Add hosts, ``parallel`` at a time, with a progress line as each one's agent
        serves; the first failure is raised once the others have finished."""
        indexes = list(indexes)
        started = time.monotonic()
        with ThreadPoolExecutor(max(1, parallel)) as pool:
            futures = [pool.submit(self._add_host, index) for index in indexes]
            for done, future in enumerate(as_completed(futures), 1):
                with contextlib.suppress(Exception):  # raised below, in host order
                    name, pid = future.result()
                    self.say(
                        f"host {done}/{len(indexes)} up ({time.monotonic() - started:.1f}s): "
                        f"{name}, netplugd pid {pid}"
                    )
        for future in futures:
            future.result()

    def _start_store(self, kind: str) -> str:
        if kind == "sqlite":
            self.say(f"store: embedded SQLite at {self.sqlite_file}")
            return f"sqlite://{self.sqlite_file}"
        return self.start_etcd()

    @property
    def sqlite_file(self) -> Path:
        """The SQLite store's file: in a directory of its own, as on a real host
        (/var/lib/netplug), since every agent's watch wakes for each write in the
        file's directory, and the lab writes its state.json at every step."""
        return self.dir / "store" / "netplug.db"

    def start_etcd(self) -> str:
        """The lab's etcd in the fabric namespace (its data kept across restarts): one
        member on the fabric's address, or ``etcd_members`` on addresses of their own
        (``etcd_address``); waits until it serves and returns the store URL."""
        procs = [self.start_etcd_member(i) for i in range(self.etcd_members)]
        url = etcd_url(self.etcd_members)
        self._wait_for_store(url, procs)
        pids = ", ".join(str(proc.pid) for proc in procs)
        where = self.fabric if self.etcd_members == 1 else f"{self.etcd_members} members"
        self.say(f"store: etcd ({where}) at {url} (pid {pids})")
        return url

    def start_etcd_member(self, index: int) -> subprocess.Popen:
        """Start member ``index`` (0-based; again after it stopped: same data, same
        address); ``_wait_for_store`` tells when the cluster serves."""
        address, name = etcd_address(index, self.etcd_members), etcd_name(index, self.etcd_members)
        netns = self.fabric if self.etcd_members == 1 else self._member_namespace(index)
        members = range(self.etcd_members)
        cluster = ",".join(
            f"{etcd_name(i, self.etcd_members)}=http://{etcd_address(i, self.etcd_members)}:2380"
            for i in members
        )
        client, peer = f"http://{address}:{ETCD_PORT}", f"http://{address}:2380"
        argv = [
            "etcd",
            "--name",
            name,
            "--data-dir",
            str(self.dir / name.replace("lab", "etcd")),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            cluster,
        ]
        if self.etcd_members > 1:
            # Elections within about a second; a member cut off from the others does
            # not depose the leader when it returns (pre-vote).
            argv += [
                f"--heartbeat-interval={ETCD_HEARTBEAT_MS}",
                f"--election-timeout={ETCD_ELECTION_MS}",
                "--pre-vote",
            ]
        return self._spawn(netns, name.replace("lab", "etcd"), argv)

    def _member_namespace(self, index: int) -> str:
        """Member ``index``'s namespace on the fabric (made on its first start):
        its own, so that a test can cut its peer traffic and nothing else's."""
        netns, link = self.prefix + f"etcd{index + 1}", f"etcd{index + 1}"
        if netns in namespaces.lab_namespaces(self.prefix):
            return netns
        namespaces.create(netns)
        address = etcd_address(index, self.etcd_members)
        self._cable(netns, link, address)
        self._join_fabric(underlay.Port(netns, "under0", address), "members")
        return netns

    def partition_etcd_member(self, index: int, cut: bool = True) -> None:
        """Drop member ``index``'s peer traffic (raft, port 2380) inside its own
        namespace, or let it through again (``cut=False``); its clients still reach
        it. Needs ``--etcd-members`` > 1."""
        netns = self.prefix + f"etcd{index + 1}"
        if not cut:
            run("ip", "netns", "exec", netns, "nft", "delete", "table", "inet", "partition")
            return
        # Both ways: segments that still went out would keep the others hearing from it.
        chains = "".join(
            f" chain {hook} {{\n  type filter hook {hook} priority 0; policy accept;\n"
            "  tcp dport 2380 drop\n  tcp sport 2380 drop\n }\n"
            for hook in ("input", "output")
        )
        rules = "table inet partition {\n" + chains + "}\n"
        run("ip", "netns", "exec", netns, "nft", "-f", "-", input=rules.encode())

    def etcd_processes(self) -> dict[int, dict]:
        """The running etcd members' process records (pid, start), by member index."""
        found = {}
        for proc in self.state.load()["processes"]:
            index = etcd_index(proc["what"])
            if index is not None and start_time(proc["pid"]) == proc["start"]:
                found[index] = proc
        return found

    def stop_etcd_member(self, index: int, *, kill: bool = False) -> None:
        """Stop member ``index`` (SIGKILL with ``kill``, as a crash would)."""
        proc = self.etcd_processes().get(index)
        if proc is None:
            return
        os.kill(proc["pid"], signal.SIGCONT)  # a paused member would not see SIGTERM
        if not kill:
            stop(proc["pid"], proc["start"])
            return
        os.kill(proc["pid"], signal.SIGKILL)
        deadline = time.monotonic() + START_TIMEOUT
        while start_time(proc["pid"]) == proc["start"] and time.monotonic() < deadline:
            time.sleep(0.01)

    def pause_etcd_member(self, index: int, paused: bool = True) -> None:
        """SIGSTOP member ``index`` (SIGCONT with ``paused=False``): to the others and
        to clients it is cut off, yet its connections stay open."""
        proc = self.etcd_processes()[index]
        os.kill(proc["pid"], signal.SIGSTOP if paused else signal.SIGCONT)

    def etcd_leader(self, timeout: float = START_TIMEOUT) -> int:
        """The index of the member that leads, once a running one says so."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index in self.etcd_processes():
                leader = self._etcd_status(index)
                if leader is not None:
                    return leader
            time.sleep(0.05)
        raise RuntimeError("no etcd member leads")

    def _etcd_status(self, index: int) -> int | None:
        """Member ``index``'s view of who leads (an index), None if it cannot say."""
        from netplug.ipam.store.etcd_gateway import Gateway
        from netplug.net import netns

        members = [
            (etcd_address(i, self.etcd_members), ETCD_PORT) for i in range(self.etcd_members)
        ]
        with netns.entered(namespaces.path(self.fabric)):
            ids = [_member_status(Gateway([member])) for member in members]
        mine = ids[index]
        if mine is None or not mine[1]:
            return None
        by_id = {status[0]: i for i, status in enumerate(ids) if status is not None}
        return by_id.get(mine[1])

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
        """Stop every etcd member of the lab (a store outage for every host)."""
        for index in self.etcd_processes():
            self.stop_etcd_member(index)

    def _wait_for_store(self, url: str, procs: list[subprocess.Popen]) -> None:
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
                exited = all(proc.poll() is not None for proc in procs)
                if exited or time.monotonic() > deadline:
                    raise RuntimeError(f"etcd did not come up; see {self.dir}/etcd*.log") from None
                time.sleep(0.1)

    def add_host(self, index: int) -> str:
        name, pid = self._add_host(index)
        netns = self.state.load()["hosts"][name]["netns"]
        self.say(f"host {name}: {netns}, underlay {host_address(index)}, netplugd pid {pid}")
        return name

    def _add_host(self, index: int) -> tuple[str, int]:
        """The host's namespace, its underlay link, conflists and agent: (name, agent PID)."""
        state = self.state.load()
        name = f"host{index}"
        netns = namespaces.create(self.prefix + name)
        self._cable(netns, name, host_address(index))
        run("ip", "-n", netns, "route", "add", "default", "via", FABRIC_ADDRESS)
        home = self.dir / name
        home.mkdir(parents=True, exist_ok=True)
        for network, spec in networks(state).items():
            self._write_conflist(home, name, state["store"], network, spec)
        self._join_fabric(underlay.Port(netns, "under0", host_address(index)), "hosts", name)
        return name, self.start_agent(name)

    def _cable(self, netns: str, link: str, address: str) -> None:
        """``netns``'s under0, with ``address`` and the MAC made from it, joined to
        the fabric's bridge as port ``link``."""
        fabric, mac = self.fabric, underlay.mac(address)
        run(
            "ip",
            "-n",
            netns,
            "link",
            "add",
            "under0",
            "address",
            mac,
            "type",
            "veth",
            "peer",
            "name",
            link,
            "netns",
            fabric,
        )
        run("ip", "-n", fabric, "link", "set", link, "master", "fabric0", "up")
        run("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "under0")
        run("ip", "-n", netns, "link", "set", "under0", "up")

    def _join_fabric(self, port: underlay.Port, kind: str, name: str = "") -> None:
        """Record ``port`` (a host's, or an etcd member's: ``kind``), then program the
        permanent neighbour entries between it and every port recorded so far.
        Recorded first: of two ports joining at once, the later one sees the
        earlier and programs both ways."""
        with self.state.update() as changed:
            changed.setdefault(kind, {})[name or port.netns] = {
                "netns": port.netns,
                "address": port.address,
            }
            others = [underlay.Port(self.fabric, "fabric0", FABRIC_ADDRESS)] + [
                underlay.Port(record["netns"], "under0", record["address"])
                for group in ("members", "hosts")
                for record in changed.get(group, {}).values()
            ]
        underlay.program(port, others)

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
            *self.agent_args,
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

    # -- networks --------------------------------------------------------------

    def add_network(self, name: str, subnet: str | None = None, isolate: bool = True) -> str:
        """Another network on every host (one more conflist each); its subnet."""
        state = self.state.load()
        if not state["hosts"]:
            raise RuntimeError("the lab is down: run 'netns-lab up' first")
        taken = networks(state)
        if not NETWORK_NAME.match(name):
            raise RuntimeError(
                f"network name {name!r}: expected 1-32 lower-case letters, digits or '-'"
            )
        if name in taken:
            raise RuntimeError(f"network {name} exists already ({taken[name]['subnet']})")
        net = choose_subnet(subnet, [spec["subnet"] for spec in taken.values()])
        spec = {"subnet": str(net), "isolate": isolate}
        for host in state["hosts"]:
            self._write_conflist(self.dir / host, host, state["store"], name, spec)
        with self.state.update() as changed:
            changed["networks"] = {**networks(changed), name: spec}
        self.say(f"network {name}: {net}" + ("" if isolate else " (not isolated)"))
        return str(net)

    def _write_conflist(self, home: Path, host: str, store: str, network: str, spec: dict) -> None:
        conflist = {
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [
                {
                    "type": "netplug",
                    "subnet": spec["subnet"],
                    "store": store,
                    "hostName": host,
                    "ipMasq": True,
                    "logFile": str(home / "netplug.log"),
                    "runDir": str(home / "run"),
                    "capabilities": {"aliases": True},
                    # The lab starts, stops and kills its agents itself (and tests do,
                    # to see what an ADD without one does): an agent an ADD started
                    # would be one the lab does not know, left behind by `down`.
                    "agent": {"autostart": False},
                    **({} if spec["isolate"] else {"isolate": False}),
                }
            ],
        }
        (home / "net.d").mkdir(exist_ok=True)
        conflist_path(home, network).write_text(json.dumps(conflist, indent=2))

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

    def cni(
        self,
        command: str,
        container: str,
        host: str,
        network: str = NETWORK,
        aliases: Iterable[str] = (),
    ) -> dict | None:
        state = self.state.load()
        conflist = json.loads(conflist_path(self.dir / host, network).read_text())
        conf = {
            "cniVersion": conflist["cniVersion"],
            "name": conflist["name"],
            **conflist["plugins"][0],
        }
        if aliases:  # as a runtime passes the "aliases" capability
            conf["runtimeConfig"] = {"aliases": list(aliases)}
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

    def run_container(
        self, host: str, name: str, network: str = NETWORK, aliases: Iterable[str] = ()
    ) -> str:
        """A container namespace ``name`` on ``host``, ADDed to ``network``; its address."""
        state = self.state.load()
        if host not in state["hosts"]:
            raise RuntimeError(f"no host {host}: hosts are {', '.join(state['hosts'])}")
        if network not in networks(state):
            raise RuntimeError(f"no network {network}: networks are {', '.join(networks(state))}")
        if name in state["containers"]:
            raise RuntimeError(f"container {name} exists already")
        netns = namespaces.create(self.prefix + f"c-{name}")
        try:
            result = self.cni("ADD", name, host, network, aliases)
        except BaseException:
            self._undo_add(name, host, network, netns)
            raise
        address = result["ips"][0]["address"]
        with self.state.update() as changed:
            changed["containers"][name] = {
                "host": host,
                "netns": netns,
                "address": address,
                "network": network,
                "aliases": list(aliases),
            }
        return address

    def _undo_add(self, name: str, host: str, network: str, netns: str) -> None:
        """After a failed or timed-out ADD: DEL, as a runtime does, then the namespace.
        The ADD's own undo may have failed or been cut short (the plugin killed at
        the timeout): without the DEL its address would stay taken for good."""
        try:
            self.cni("DEL", name, host, network)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
            self.say(f"DEL {name} after its failed ADD: {e} (continuing)")
        finally:
            namespaces.delete(netns)

    def run_containers(
        self,
        host: str,
        names: list[str],
        network: str = NETWORK,
        aliases: Callable[[str], list[str]] = lambda name: [],
        parallel: int = 4,
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Start ``names`` on ``host``, ``parallel`` at a time, with a progress line
        about every 10 %: (name -> address, name -> error) for the started and failed."""
        started, failed = {}, {}
        began = time.monotonic()
        step = max(1, len(names) // 10)
        with ThreadPoolExecutor(max(1, parallel)) as pool:
            futures = {
                pool.submit(self.run_container, host, name, network, aliases(name)): name
                for name in names
            }
            for done, future in enumerate(as_completed(futures), 1):
                name = futures[future]
                try:
                    started[name] = future.result()
                except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                    failed[name] = str(e).strip() or type(e).__name__
                if done % step == 0 or done == len(names):
                    self.say(
                        f"{done}/{len(names)} containers on {host} "
                        f"({len(failed)} failed, {time.monotonic() - began:.1f}s)"
                    )
        return started, failed

    def remove_container(self, name: str) -> None:
        """DEL the container and delete its namespace."""
        container = self.state.load()["containers"][name]
        self.cni("DEL", name, container["host"], container.get("network", NETWORK))
        namespaces.delete(container["netns"])
        with self.state.update() as changed:
            del changed["containers"][name]

    def netplugctl(self, host: str | None, *args: str) -> list[str]:
        """The command line of netplugctl ``args`` in ``host``'s namespace (None: the
        first host's), on the lab's store and as that host: etcd is only reachable
        inside the lab, and netplugctl asks that host's agent too."""
        hosts = self.state.load()["hosts"]
        if not hosts:
            raise RuntimeError("the lab is down: run 'netns-lab up' first")
        host = host or next(iter(hosts))
        cmd = [str(BIN / "netplugctl"), "--store", self.state.load()["store"], "--host-name", host]
        return ["ip", "netns", "exec", hosts[host]["netns"], *cmd, *args]

    def container_netns(self, name: str) -> str:
        containers = self.state.load()["containers"]
        if name not in containers:
            raise RuntimeError(f"no container {name}: containers are {', '.join(containers)}")
        return containers[name]["netns"]

    # -- down ------------------------------------------------------------------

    def down(self, parallel: int = 4) -> None:
        state = self.state.load()

        def delete(item: tuple[str, dict]) -> None:
            name, container = item
            try:
                self.cni("DEL", name, container["host"], container.get("network", NETWORK))
            except (RuntimeError, subprocess.TimeoutExpired, KeyError, OSError) as e:
                self.say(f"DEL {name}: {e} (continuing)")

        def halt(proc: dict) -> None:
            if stop(proc["pid"], proc["start"]):
                self.say(f"stopped {proc['what']} (pid {proc['pid']})")

        agents = [p for p in state["processes"] if p["what"].endswith("/netplugd")]
        began = time.monotonic()
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(delete, state["containers"].items()))
        deleted = time.monotonic()
        # All at once, before the store they use.
        stopped = stop_all([(p["pid"], p["start"]) for p in agents])
        self.say(
            f"DEL of {len(state['containers'])} containers: {deleted - began:.1f}s; "
            f"{len(stopped)} agents stopped: {time.monotonic() - deleted:.1f}s"
        )
        for proc in reversed(state["processes"]):
            if proc not in agents:
                halt(proc)
        gone = namespaces.delete_all(namespaces.lab_namespaces(self.prefix))
        self.say(f"removed {gone} namespaces")
        with self.state.update() as changed:
            changed.clear()
            changed.update(empty_state())
        subprocess.run(["rm", "-rf", str(self.dir)], check=False, timeout=COMMAND_TIMEOUT)


def networks(state: dict) -> dict[str, dict]:
    """The lab's networks (name -> subnet, isolate); a lab from before networks has one."""
    return state.get("networks") or {NETWORK: {"subnet": SUBNET, "isolate": True}}


def conflist_path(home: Path, network: str) -> Path:
    return home / "net.d" / f"50-{network}.conflist"


def choose_subnet(
    given: str | None, taken: list[str]
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``given`` checked against the networks' subnets, or the first free one of
    FREE_SUBNETS; a RuntimeError naming the clash."""
    used = [ipaddress.ip_network(net) for net in taken]
    if given is not None:
        try:
            net = ipaddress.ip_network(given)
        except ValueError as e:
            raise RuntimeError(f"--subnet {given}: {e}") from None
        if net.version != 4 or net.prefixlen > 24:
            raise RuntimeError(f"--subnet {given}: expected an IPv4 range of /24 or larger")
        clash = next((u for u in used if net.overlaps(u)), None)
        if clash:
            raise RuntimeError(f"--subnet {given} overlaps {clash}, used by another network")
        return net
    for candidate in map(ipaddress.ip_network, FREE_SUBNETS):
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise RuntimeError("no free /16 left in 10.0.0.0/8: give --subnet")


def _wait_start(pid: int) -> str | None:
    for _ in range(100):
        started = start_time(pid)
        if started is not None:
            return started
        time.sleep(0.01)
    return None
