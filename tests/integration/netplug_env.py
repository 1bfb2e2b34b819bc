"""A netplug test host: a namespace the test made, a store, and the real executables.

Plugins are executed as a runtime would (``ip netns exec HOST netplug`` with
the CNI variables and the config on stdin); the agent runs as a real process
started here and killed by PID. Everything lives under the test's tmp_path.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import processes
from runtimes import netns_path, run
from waiting import wait_for

BIN = Path(sys.executable).parent
AGENT_START_TIMEOUT = 15.0


@dataclass
class Outcome:
    """What a plugin call did: exit status, parsed stdout (result or error), stderr."""

    status: int
    out: dict[str, Any] | None
    stdout: str
    stderr: str

    @property
    def code(self) -> int | None:
        """The CNI error code, None on success."""
        return None if self.status == 0 else (self.out or {}).get("code")


class NetplugHost:
    """One "host" namespace running netplug, with its own store and state dirs."""

    def __init__(
        self, netns: str, workdir: Path, host_name: str = "node-1", store: str | None = None
    ) -> None:
        self.netns = netns
        self.workdir = workdir
        self.host_name = host_name
        self.db = workdir / "netplug.db"
        self.store = store or f"sqlite://{self.db}"
        self.log_file = workdir / "netplug.log"
        self.run_dir = workdir / "run"
        workdir.mkdir(parents=True, exist_ok=True)

    def conf(self, version: str = "1.0.0", name: str = "blue", **fields: Any) -> dict[str, Any]:
        """A netplug network config (the plugin's part of a conflist, as libcni sends it).
        Autostart is off: a test says whether an agent serves (``agent()``), and one
        that wants the plugin to start it passes ``agent={"autostart": True}``."""
        conf = {
            "cniVersion": version,
            "name": name,
            "type": "netplug",
            "subnet": "10.244.0.0/16",
            "store": self.store,
            "hostName": self.host_name,
            "logFile": str(self.log_file),
            "runDir": str(self.run_dir),
            "agent": {"autostart": False},
        }
        conf.update(fields)
        return conf

    def call(
        self,
        command: str,
        conf: Mapping[str, Any] | None = None,
        *,
        container_id: str | None = None,
        netns: str | None = None,
        ifname: str | None = "eth0",
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        plugin: str = "netplug",
        timeout: float = 30.0,
        launcher: Sequence[str] = (),
    ) -> Outcome:
        """Execute ``plugin`` in this host's namespace with ``CNI_COMMAND=command``
        (through ``launcher``, which runs the command line that follows it)."""
        cni_env = {"CNI_COMMAND": command, "CNI_PATH": "/usr/lib/cni"}
        if container_id is not None:
            cni_env["CNI_CONTAINERID"] = container_id
        if netns is not None:
            cni_env["CNI_NETNS"] = str(netns_path(netns))
        if ifname is not None:
            cni_env["CNI_IFNAME"] = ifname
        cni_env.update(env or {})
        data = stdin if stdin is not None else json.dumps(conf or {}).encode()
        proc = subprocess.run(
            [*launcher, "ip", "netns", "exec", self.netns, str(BIN / plugin)],
            input=data,
            capture_output=True,
            timeout=timeout,
            env={"PATH": os.environ.get("PATH", ""), **cni_env},
        )
        stdout = proc.stdout.decode()
        try:
            out = json.loads(stdout) if stdout.strip() else None
        except ValueError:
            out = None
        return Outcome(proc.returncode, out, stdout, proc.stderr.decode())

    def add(self, conf: Mapping[str, Any], container_id: str, netns: str, **kw: Any) -> dict:
        done = self.call("ADD", conf, container_id=container_id, netns=netns, **kw)
        assert done.status == 0, f"ADD failed: {done.stdout} {done.stderr}"
        assert done.out is not None
        return done.out

    def delete(
        self, conf: Mapping[str, Any], container_id: str, netns: str | None, **kw: Any
    ) -> None:
        done = self.call("DEL", conf, container_id=container_id, netns=netns, **kw)
        assert done.status == 0, f"DEL failed: {done.stdout} {done.stderr}"
        assert done.stdout == ""

    # -- looking at the host ---------------------------------------------------------------

    def links(self) -> dict[str, dict[str, Any]]:
        """This host's links by name (``ip -j link``)."""
        out = run(["ip", "-n", self.netns, "-j", "-d", "link", "show"]).stdout
        return {link["ifname"]: link for link in json.loads(out)}

    def veths(self) -> set[str]:
        """The host's veths now: DEL answers only once it deleted its pair."""
        return {
            name
            for name, link in self.links().items()
            if link.get("linkinfo", {}).get("info_kind") == "veth"
        }

    def records(self, prefix: str = "/netplug/") -> dict[str, dict]:
        """Every store record under ``prefix`` (the SQLite store, read directly)."""
        from netplug.ipam.store.sqlite import SQLiteStore

        store = SQLiteStore(str(self.db))
        try:
            return {kv.key: json.loads(kv.value) for kv in store.range(prefix, prefix=True).kvs}
        finally:
            store.close()

    def neighbours(self, address: str) -> list[dict[str, Any]]:
        """The host's neighbour entries for ``address`` (``ip -j neigh``), any state:
        the bridge's for a container are permanent, made by ADD, deleted by DEL."""
        cmd = ["ip", "-n", self.netns, "-j", "neigh", "show", "to", address, "nud", "all"]
        return json.loads(run(cmd).stdout or "[]")

    def nft_tables(self) -> str:
        return run(["ip", "netns", "exec", self.netns, "nft", "list", "tables"]).stdout

    # -- the agent -------------------------------------------------------------------------

    @contextmanager
    def agent(
        self, launcher: Sequence[str] | None = None, *extra: str
    ) -> Iterator[subprocess.Popen]:
        """netplugd in this host's namespace, started through ``launcher`` (default
        ``ip netns exec HOST``); killed by PID afterwards. It never forwards DNS
        outside the test's namespaces (``--upstream none``) unless ``extra`` says."""
        launcher = launcher or ["ip", "netns", "exec", self.netns]
        argv = [
            *launcher,
            str(BIN / "netplugd"),
            "--store",
            self.store,
            "--host-name",
            self.host_name,
            "--run-dir",
            str(self.run_dir),
            *(extra or ("--upstream", "none")),
        ]
        log = self.workdir / "netplugd.log"
        with open(log, "wb") as sink:
            proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
        try:
            _wait_for_line(log, "serving host", proc, AGENT_START_TIMEOUT)
            yield proc
        finally:
            processes.stop(proc)

    def agent_log(self) -> str:
        path = self.workdir / "netplugd.log"
        return path.read_text() if path.exists() else ""

    # -- an agent the plugin started (autostart) -----------------------------------------

    @property
    def started_agent_dir(self) -> Path:
        """Where an agent the plugin starts keeps its PID file and log."""
        return self.run_dir / self.host_name

    def started_agent_pid(self) -> int | None:
        path = self.started_agent_dir / "netplugd.pid"
        return int(path.read_text()) if path.exists() else None

    def started_agent_log(self) -> str:
        path = self.started_agent_dir / "netplugd.log"
        return path.read_text() if path.exists() else ""

    @contextmanager
    def started_agents(self) -> Iterator[None]:
        """Stops, afterwards, every agent the plugin started in this host's namespace,
        by PID: the one its PID file names and any other (a test that failed may have
        left more). A PID is only signalled while it is such an agent there."""
        try:
            yield
        finally:
            for pid in agents_in(self.netns):
                stop_pid(pid)


AGENT_MODULE = b"netplug.agent.daemon"  # in the command line of an agent the plugin starts


def agents_in(netns: str) -> list[int]:
    """PIDs of the live (not zombie) agents the plugin started in ``netns``.

    An agent's child between fork and exec (the enforcer runs ``nft``) has the agent's
    command line for a moment; it is part of that agent, not a second one."""
    want = os.stat(netns_path(netns))
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ns = os.stat(entry / "ns" / "net")
            cmdline = (entry / "cmdline").read_bytes()
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        same = (ns.st_dev, ns.st_ino) == (want.st_dev, want.st_ino)
        if same and AGENT_MODULE in cmdline.split(b"\0") and state not in "ZX":
            parents[int(entry.name)] = int(ppid)
    return sorted(pid for pid, ppid in parents.items() if ppid not in parents)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: nobody here is its parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM ``pid`` (not this process's child), SIGKILL when it outlives ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if wait_for(lambda: not _alive(pid), timeout, poll=0.05):
            return


def _wait_for_line(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"netplugd exited with {proc.returncode}: {path.read_text()}")
        time.sleep(0.02)
    raise TimeoutError(f"netplugd did not log {text!r} within {timeout} s: {path.read_text()}")


CONVERGENCE = 10.0  # agents converge within a second (bench); CI machines are loaded


def eventually(check, timeout: float = CONVERGENCE) -> bool:
    """Whether ``check()`` turns true within ``timeout`` seconds; polled less often
    than unit tests poll, as checks here start processes (ping, dig)."""
    return wait_for(check, timeout, poll=0.05)


def container_addresses(netns: str, ifname: str = "eth0") -> list[str]:
    """Global addresses (CIDR) on ``ifname`` inside ``netns``."""
    out = run(["ip", "-n", netns, "-j", "addr", "show", "dev", ifname]).stdout
    return [
        f"{a['local']}/{a['prefixlen']}"
        for link in json.loads(out)
        for a in link["addr_info"]
        if a.get("scope") == "global"
    ]


def ping(netns: str, address: str, count: int = 1) -> bool:
    """One bounded ping from ``netns`` to ``address``."""
    family = ["-6"] if ":" in address else []
    cmd = ["ip", "netns", "exec", netns, "ping", *family, "-c", str(count), "-W", "2", address]
    return subprocess.run(cmd, capture_output=True, timeout=15).returncode == 0


AGENT_HTTP = "127.0.0.1:8053"  # where the tests' agents serve --http, in their own namespace


def http_get(netns: str, path: str, address: str = AGENT_HTTP) -> tuple[int, str]:
    """GET http://``address````path`` from inside ``netns``: (status, body)."""
    cmd = ["ip", "netns", "exec", netns, "curl", "-s", "-m", "5", "-w", "\n%{http_code}"]
    body, _, code = run([*cmd, f"http://{address}{path}"]).stdout.rpartition("\n")
    return int(code), body


def sample(metrics: str, name: str) -> float | None:
    """The value of the sample ``name`` (with its labels) in a /metrics text; None: absent."""
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None
