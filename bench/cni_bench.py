"""netplug against the reference CNI plugins (Debian's ``bridge`` + ``host-local``).

Four scenarios, each side's samples interleaved (the machine is noisy):

- ``latency``: ADD and DEL of one container, ipMasq off and on, for netplug
  with its agent, netplug without it, and the reference;
- ``parallel``: 100 ADDs started at once (then 100 DELs), wall time until all
  are done, netplug with its agent against the reference;
- ``scale``: ADD latency with no container attached and with 1000 attached;
- ``autostart``: the first ADD on a fresh host without netplugd, which starts
  it (README, "The agent starts itself"), then ADD+DEL through that agent
  against the reference;
- ``startup``: VERSION from exec to exit, ``python -c pass`` for context,
  ``-X importtime`` of the plugin's path when ADD goes to the agent, and
  whether ``.pyc`` caching was in effect.

netplugd runs as its systemd unit runs it, at nice -10 (the unit says why).

Safety: every plugin, agent and container runs in network namespaces this
script creates (``npb-host-RUN-*`` and ``npb-ctr-RUN-*``); the root namespace is
never configured. A plugin is started the way a runtime starts it - one exec,
PATH and the CNI variables as its whole environment, the config on stdin - from
this process's thread while it is setns(2)'d into the side's host namespace just
around ``posix_spawn``: no extra exec, and the same for both sides. Namespaces,
processes (killed by PID) and the temporary directory are removed in
``finally``, also on Ctrl-C or SIGTERM; every loop is bounded in count and time.

    sudo .venv/bin/python bench/cni_bench.py [--samples 30] [--only latency] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import math
import os
import re
import resource
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netplug.lab import namespaces

from harness import quantile, run_guarded, stop

REPO = Path(__file__).resolve().parent.parent
# Set by use_venv(): the venv netplug is installed in, and the plugin as a runtime
# finds it (a launcher written by 'netplugctl install', as users install it).
VENV_BIN = REPO / ".venv" / "bin"
NETPLUG = VENV_BIN / "netplug"
NETPLUGD = VENV_BIN / "netplugd"
PYTHON = VENV_BIN / "python"
CNI_DIR = Path("/usr/lib/cni")
BRIDGE = CNI_DIR / "bridge"
# What a runtime passes: a plain PATH and the CNI variables, nothing else.
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

SUBNET = "10.250.0.0/16"
HOST_BLOCK_PREFIX = 24
HOST_NAME = "bench-host"
NETWORK = "npb"
CNI_VERSION = "1.0.0"
MTU = 1500

SCENARIOS = ("startup", "latency", "parallel", "scale", "autostart")
CALL_TIMEOUT = 30.0  # one plugin call, or one batch of parallel calls
AGENT_START_TIMEOUT = 20.0
IP_TIMEOUT = 120.0
PARALLEL = 100
SCALE_ATTACHED = 1000
POPULATE_WAVE = 50
POPULATE_BUDGET = 90.0  # seconds per side to attach SCALE_ATTACHED containers
WARMUP_CALLS = 2
AGENT_NICE = -10  # systemd/netplugd.service's Nice=
IMPORTTIME_RUNS = 5
LATENCY_BAR = 1.5
PARALLEL_BAR = 1.0
FIRST_ADD_BAR = 1.5  # seconds: the first ADD on a host, agent start included
AUTOSTART_BAR = 1.0  # ADD+DEL through the started agent against the reference
AFTER_START = 5  # ADD+DEL pairs per side after each first ADD
CLONE_NEWNET = 0x40000000


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- statistics and formatting ---------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def p90(xs: Sequence[float]) -> float:
    """Nearest-rank 90th percentile."""
    return quantile(list(xs), 0.9) if xs else math.nan


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    netplug: str
    reference: str
    ratio: float
    bar: str = "—"
    verdict: str = "—"

    def cells(self) -> list[str]:
        ratio = "n/a" if math.isnan(self.ratio) else f"{self.ratio:.2f}x"
        return [self.scenario, self.netplug, self.reference, ratio, self.bar, self.verdict]


def time_row(scenario: str, np: Sequence[float], ref: Sequence[float], bar: float | None) -> Row:
    """Latencies (lower is better): ratio netplug/reference, pass when ratio <= bar."""
    ratio = median(np) / median(ref) if ref and np else math.nan
    verdict = "—" if bar is None else ("pass" if ratio <= bar else "FAIL")
    return Row(
        scenario,
        f"{ms(median(np))} / {ms(p90(np))} ms (n={len(np)})",
        f"{ms(median(ref))} / {ms(p90(ref))} ms (n={len(ref)})",
        ratio,
        "—" if bar is None else f"≤ {bar:g}x",
        verdict,
    )


def rate_row(
    scenario: str, np: Sequence[float], ref: Sequence[float], count: int, bar: bool = True
) -> Row:
    """Wall times of ``count`` parallel calls: ratio of containers/s; with ``bar``,
    pass when >= PARALLEL_BAR (the issue sets one for ADD only)."""
    ratio = median(ref) / median(np) if ref and np else math.nan

    def cell(walls: Sequence[float]) -> str:
        rate = count / median(walls) if walls else math.nan
        return f"{median(walls):.2f} / {p90(walls):.2f} s = {rate:.0f}/s (n={len(walls)})"

    if not bar:
        return Row(scenario, cell(np), cell(ref), ratio, "—", "—")
    verdict = "pass" if ratio >= PARALLEL_BAR else "FAIL"
    return Row(scenario, cell(np), cell(ref), ratio, f"≥ {PARALLEL_BAR:g}x", verdict)


def markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- namespaces -------------------------------------------------------------------------------


class NetnsSwitch:
    """Moves the calling thread into a host namespace and back (setns(2) is per thread;
    children inherit the namespace of the thread that spawns them)."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.home_inode = os.fstat(self.home).st_ino

    def _setns(self, fd: int) -> None:
        if self._libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns: {os.strerror(errno)}")

    @contextlib.contextmanager
    def inside(self, fd: int) -> Iterator[None]:
        if os.fstat(fd).st_ino == self.home_inode:
            raise RuntimeError("refusing to run a plugin in the bench's own namespace")
        self._setns(fd)
        try:
            yield
        finally:
            self._setns(self.home)

    def close(self) -> None:
        os.close(self.home)


class Namespaces:
    """The network namespaces of this run, made and removed with ``ip -batch``."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.live: set[str] = set()
        self._counter = 0

    def _batch(self, lines: list[str], force: bool = False) -> None:
        if not lines:
            return
        cmd = ["ip", "-force", "-batch", "-"] if force else ["ip", "-batch", "-"]
        done = subprocess.run(
            cmd, input="".join(lines), capture_output=True, text=True, timeout=IP_TIMEOUT
        )
        if done.returncode != 0 and not force:
            raise RuntimeError(f"ip -batch failed: {done.stderr.strip()[:500]}")

    def add(self, names: list[str]) -> list[str]:
        self.live.update(names)  # before creating: a partial batch is still cleaned up
        self._batch([f"netns add {name}\n" for name in names])
        return names

    def host(self, tag: str) -> str:
        name = f"npb-host-{self.run_id}-{tag}"
        self.add([name])
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
        return name

    def containers(self, count: int) -> list[str]:
        names = [f"npb-ctr-{self.run_id}-c{self._counter + i}" for i in range(count)]
        self._counter += count
        return self.add(names)

    def delete(self, names: Sequence[str]) -> None:
        self._batch([f"netns del {name}\n" for name in names], force=True)
        self.live.difference_update(names)

    def cleanup(self) -> None:
        """Every namespace of this run, also ones a failed batch may have left."""
        ours = (
            {
                name
                for name in os.listdir("/run/netns")
                if name.startswith("npb-") and f"-{self.run_id}-" in name
            }
            if os.path.isdir("/run/netns")
            else set()
        )
        self.delete(sorted(self.live | ours))


def container_id(ctr: str) -> str:
    return hashlib.sha256(ctr.encode()).hexdigest()


def pod_name(ctr: str) -> str:
    return ctr.rsplit("-", 1)[1]


# -- running plugins --------------------------------------------------------------------------


@dataclass
class Call:
    """One execution of a program: what to run and what happened."""

    argv: list[str]
    env: dict[str, str]
    stdin: bytes = b""
    pid: int = 0
    started: float = 0.0
    ended: float = math.nan
    status: int | None = None
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        return self.status == 0

    def describe(self) -> str:
        text = (bytes(self.out) + b" " + bytes(self.err)).decode(errors="replace").strip()
        return f"exit {self.status}: {text[:300]}"


class Runner:
    """posix_spawn + pidfd: each call timed from just before spawn to its exit."""

    def __init__(self, switch: NetnsSwitch) -> None:
        self.switch = switch
        self.live: set[int] = set()

    def run(self, host_fd: int, calls: Sequence[Call], timeout: float = CALL_TIMEOUT) -> None:
        """Start every call at once inside the namespace ``host_fd``; wait for all."""
        fds: list[int] = []
        owner: dict[int, tuple[str, Call]] = {}
        child_ends: list[int] = []
        try:
            prepared = []
            for call in calls:
                if len(call.stdin) > 60_000:
                    raise ValueError("stdin must fit in a pipe buffer")
                rin, win = os.pipe()
                fds += [rin, win]
                os.write(win, call.stdin)
                os.close(win)
                fds.remove(win)
                rout, wout = os.pipe()
                rerr, werr = os.pipe()
                fds += [rout, wout, rerr, werr]
                child_ends += [rin, wout, werr]
                owner[rout] = ("out", call)
                owner[rerr] = ("err", call)
                actions = [
                    (os.POSIX_SPAWN_DUP2, rin, 0),
                    (os.POSIX_SPAWN_DUP2, wout, 1),
                    (os.POSIX_SPAWN_DUP2, werr, 2),
                ]
                prepared.append((call, actions))
            with self.switch.inside(host_fd):
                for call, actions in prepared:
                    call.started = time.perf_counter()
                    call.pid = os.posix_spawn(
                        call.argv[0], call.argv, call.env, file_actions=actions
                    )
                    self.live.add(call.pid)
                    pidfd = os.pidfd_open(call.pid)
                    fds.append(pidfd)
                    owner[pidfd] = ("pid", call)
            for fd in child_ends:
                os.close(fd)
                fds.remove(fd)
            self._wait(owner, fds, timeout)
        finally:
            for fd in fds:
                os.close(fd)
            for call in calls:
                if call.pid in self.live:
                    self._kill(call.pid)

    def _wait(self, owner: dict[int, tuple[str, Call]], fds: list[int], timeout: float) -> None:
        poller = select.poll()
        for fd in owner:
            poller.register(fd, select.POLLIN)
        running = sum(kind == "pid" for kind, _ in owner.values())
        pipes = len(owner) - running
        deadline = time.monotonic() + timeout
        while running or pipes:
            now = time.monotonic()
            if now >= deadline:
                break
            events = poller.poll(max(1, math.ceil((deadline - now) * 1000)))
            stamp = time.perf_counter()
            for fd, _ in events:
                kind, call = owner[fd]
                if kind == "pid":
                    call.ended = stamp
                    _, status = os.waitpid(call.pid, 0)
                    call.status = os.waitstatus_to_exitcode(status)
                    self.live.discard(call.pid)
                    running -= 1
                    if not running:  # output still buffered: drain it, briefly
                        deadline = min(deadline, time.monotonic() + 2.0)
                else:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        (call.out if kind == "out" else call.err).extend(chunk)
                        continue
                    pipes -= 1
                poller.unregister(fd)
                os.close(fd)
                fds.remove(fd)

    def _kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.live.discard(pid)

    def kill_all(self) -> None:
        for pid in list(self.live):
            self._kill(pid)


# -- the two sides ----------------------------------------------------------------------------


def cpu_seconds(side: Side) -> dict[str, float]:
    """CPU time so far: of the plugin processes (and what they ran: host-local),
    of the side's agent, and of the whole machine (kernel threads, softirqs)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    agent = 0.0
    if side.agent_proc is not None:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{side.agent_proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            agent = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    return {
        "plugins": children.ru_utime + children.ru_stime,
        "agent": agent,
        "machine": busy / os.sysconf("SC_CLK_TCK"),
    }


class Side:
    """One plugin on its own host namespace, with its own state under the temp dir."""

    def __init__(
        self,
        bench: Bench,
        label: str,
        kind: str,
        masq: bool,
        agent: bool,
        tag: str,
        autostart: bool = False,
    ) -> None:
        self.label, self.kind, self.masq, self.agent = label, kind, masq, agent
        self.netns = bench.ns.host(tag)
        self.fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY | os.O_CLOEXEC)
        self.workdir = bench.tmp / tag
        self.workdir.mkdir()
        self.agent_proc: subprocess.Popen | None = None
        self.cpu: dict[str, list[dict[str, float]]] = {"ADD": [], "DEL": []}  # per call, by round
        self.store = f"sqlite://{self.workdir / 'netplug.db'}"
        if kind == "netplug":
            self.argv = [str(NETPLUG)]
            conf: dict[str, Any] = {
                "cniVersion": CNI_VERSION,
                "name": NETWORK,
                "type": "netplug",
                "subnet": SUBNET,
                "hostBlockPrefix": HOST_BLOCK_PREFIX,
                "mtu": MTU,
                "ipMasq": masq,
                "store": self.store,
                "hostName": HOST_NAME,
                "logFile": str(self.workdir / "netplug.log"),
                "runDir": str(self.workdir / "run"),
                "agent": {"autostart": autostart},  # else this script starts it, or not
            }
        else:
            self.argv = [str(BRIDGE)]
            conf = {
                "cniVersion": CNI_VERSION,
                "name": NETWORK,
                "type": "bridge",
                "bridge": "npb0",
                "isGateway": True,
                "ipMasq": masq,
                "mtu": MTU,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(self.workdir / "host-local"),
                },
            }
        self.conf = json.dumps(conf).encode()
        if agent:
            self.start_agent(bench.switch)

    def start_agent(self, switch: NetnsSwitch) -> None:
        log = self.workdir / "netplugd.log"
        # As systemd/netplugd.service runs it (Nice=-10).
        argv = ["nice", "-n", str(AGENT_NICE), str(NETPLUGD), "--store", self.store]
        with open(log, "wb") as sink, switch.inside(self.fd):
            self.agent_proc = subprocess.Popen(
                [*argv, "--host-name", HOST_NAME, "--run-dir", str(self.workdir / "run")],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={"PATH": PATH_ENV},
            )
        deadline = time.monotonic() + AGENT_START_TIMEOUT
        while "serving host" not in log.read_text():
            if self.agent_proc.poll() is not None:
                raise RuntimeError(f"netplugd exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"netplugd did not start: {log.read_text()[-2000:]}")
            time.sleep(0.02)

    def env(self, command: str, ctr: str) -> dict[str, str]:
        return {
            "PATH": PATH_ENV,
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id(ctr),
            "CNI_NETNS": f"/run/netns/{ctr}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(CNI_DIR),
            # As containerd passes them; the reference needs IgnoreUnknown for the rest.
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={pod_name(ctr)}",
        }

    def call(self, command: str, ctr: str, argv: list[str] | None = None) -> Call:
        return Call(argv or self.argv, self.env(command, ctr), self.conf)

    def handle_times(self, command: str, ids: set[str]) -> list[float]:
        """Seconds the handler took per call of ``ids``, from the plugin's log file."""
        path = self.workdir / "netplug.log"
        if self.kind != "netplug" or not path.exists():
            return []
        found = []
        pattern = re.compile(rf" {command} container=(\S+) .* ok \(([\d.]+) ms\)")
        for line in path.read_text().splitlines():
            match = pattern.search(line)
            if match and match.group(1) in ids:
                found.append(float(match.group(2)) / 1000)
        return found

    def agent_calls(self) -> int:
        """Calls the agent logged having handled (0 when no agent runs)."""
        path = self.workdir / "netplugd.log"
        if not path.exists():
            return 0
        return sum(" container=" in line for line in path.read_text().splitlines())

    def close(self) -> None:
        if self.agent_proc is not None:
            stop(self.agent_proc, timeout=10)
        if (pid := self.started_agent()) is not None:
            namespaces.stop(pid, namespaces.start_time(pid))
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def started_agent(self) -> int | None:
        """The PID of the agent the plugin started (its PID file), None when none runs."""
        path = self.workdir / "run" / HOST_NAME / "netplugd.pid"
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text())
        return None


class Bench:
    def __init__(self, deadline: float) -> None:
        self.run_id = secrets.token_hex(3)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"npb-{self.run_id}-"))
        self.ns = Namespaces(self.run_id)
        self.switch = NetnsSwitch()
        self.runner = Runner(self.switch)
        self.sides: list[Side] = []
        self.deadline = deadline
        self.details: list[str] = []
        self.raw: dict[str, Any] = {}
        self.failures: list[str] = []

    def side(
        self, label: str, kind: str, masq: bool = False, agent: bool = False, **kw: bool
    ) -> Side:
        tag = f"{len(self.sides)}{kind[0]}"
        side = Side(self, label, kind, masq, agent, tag, **kw)
        self.sides.append(side)
        return side

    def close_sides(self, sides: Sequence[Side]) -> None:
        for side in sides:
            side.close()
            self.ns.delete([side.netns])

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def one(self, side: Side, command: str, ctr: str) -> Call:
        call = side.call(command, ctr)
        self.runner.run(side.fd, [call])
        if not call.ok:
            self.fail(f"{side.label} {command} {ctr}: {call.describe()}")
        return call

    def many(self, side: Side, command: str, ctrs: Sequence[str]) -> tuple[float, int]:
        """Wall seconds of ``command`` for every container at once, and how many failed.
        Also notes in ``side.cpu`` the CPU each call cost, where it was spent."""
        calls = [side.call(command, ctr) for ctr in ctrs]
        before = cpu_seconds(side)
        self.runner.run(side.fd, calls, timeout=max(CALL_TIMEOUT, 0.5 * len(calls)))
        after = cpu_seconds(side)
        side.cpu[command].append(
            {where: (after[where] - before[where]) / len(calls) for where in after}
        )
        bad = [c for c in calls if not c.ok]
        for call in bad[:3]:
            self.fail(f"{side.label} parallel {command}: {call.describe()}")
        if any(math.isnan(c.ended) for c in calls):
            return math.inf, len(bad)
        return max(c.ended for c in calls) - min(c.started for c in calls), len(bad)

    def fail(self, message: str) -> None:
        self.failures.append(message)
        progress("FAILED " + message)

    def warm(self, sides: Sequence[Side], pin: bool) -> list[str]:
        """Untimed ADD/DEL cycles (the first creates the bridge and leases the block);
        with ``pin``, one container stays attached: a host that already runs one."""
        ctrs = self.ns.containers(len(sides) * (WARMUP_CALLS + 1))
        it = iter(ctrs)
        for side in sides:
            for _ in range(WARMUP_CALLS):
                ctr = next(it)
                self.one(side, "ADD", ctr)
                self.one(side, "DEL", ctr)
            ctr = next(it)
            if pin:
                self.one(side, "ADD", ctr)
        return ctrs

    def cleanup(self) -> None:
        for side in self.sides:
            with contextlib.suppress(Exception):
                side.close()
        self.runner.kill_all()
        try:
            self.ns.cleanup()
        finally:
            self.switch.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


def rotated(items: Sequence[Side], i: int) -> list[Side]:
    k = i % len(items)
    return [*items[k:], *items[:k]]


def sample_add_del(
    b: Bench, sides: Sequence[Side], samples: int, what: str
) -> tuple[dict[str, dict[str, list[float]]], dict[str, set[str]], list[str]]:
    """``samples`` rounds of one ADD then DEL per side, each round in a rotated order
    (the machine's load drifts: every side gets its share of it). Returns each side's
    seconds per command and container IDs, counting a pair only when both calls
    succeeded, and the container namespaces left unused when time ran out."""
    times: dict[str, dict[str, list[float]]] = {s.label: {"ADD": [], "DEL": []} for s in sides}
    ids: dict[str, set[str]] = {s.label: set() for s in sides}
    ctrs = iter(b.ns.containers(samples * len(sides)))
    for i in range(samples):
        if b.out_of_time():
            b.fail(f"{what}: time budget spent after {i} samples")
            break
        for side in rotated(sides, i):
            ctr = next(ctrs)
            add = b.one(side, "ADD", ctr)
            delete = b.one(side, "DEL", ctr)
            if add.ok and delete.ok:
                times[side.label]["ADD"].append(add.seconds)
                times[side.label]["DEL"].append(delete.seconds)
                ids[side.label].add(container_id(ctr))
    return times, ids, list(ctrs)


# -- scenarios --------------------------------------------------------------------------------


def scenario_latency(b: Bench, samples: int) -> list[Row]:
    rows: list[Row] = []
    for masq in (False, True):
        if masq and not shutil.which("iptables", path=PATH_ENV):
            b.fail("ipMasq: the reference needs iptables: apt-get install iptables")
            continue
        tag = "ipMasq on" if masq else "ipMasq off"
        progress(f"latency, {tag}: {samples} samples per side")
        sides = [
            b.side("reference", "ref", masq),
            b.side("netplug+agent", "netplug", masq, agent=True),
            b.side("netplug, no agent", "netplug", masq),
        ]
        spent = b.warm(sides, pin=True)
        times, ids, unused = sample_add_del(b, sides, samples, f"latency {tag}")
        for t in times.values():
            t["ADD+DEL"] = [add + delete for add, delete in zip(t["ADD"], t["DEL"], strict=True)]
        ref = times["reference"]
        for label, bar in (("netplug+agent", LATENCY_BAR), ("netplug, no agent", None)):
            for op in ("ADD", "DEL", "ADD+DEL"):
                rows.append(time_row(f"{op}, {tag}, {label}", times[label][op], ref[op], bar))
        for side in sides[1:]:
            handled = {op: side.handle_times(op, ids[side.label]) for op in ("ADD", "DEL")}
            b.details.append(
                f"latency {tag}, {side.label}: handler time (plugin log) ADD "
                f"{ms(median(handled['ADD']))} ms, DEL {ms(median(handled['DEL']))} ms "
                f"(median); wall ADD {ms(median(times[side.label]['ADD']))} ms"
                + (f"; agent handled {side.agent_calls()} calls" if side.agent else "")
            )
        b.raw[f"latency {tag}"] = times
        b.close_sides(sides)
        b.ns.delete(spent + unused)
    return rows


def scenario_parallel(b: Bench, rounds: int) -> list[Row]:
    progress(f"parallel: {rounds} rounds of {PARALLEL} ADDs then DELs per side")
    sides = [b.side("reference", "ref"), b.side("netplug+agent", "netplug", agent=True)]
    spent = b.warm(sides, pin=True)
    walls = {s.label: {"ADD": [], "DEL": []} for s in sides}
    ids: set[str] = set()
    for r in range(rounds):
        if b.out_of_time():
            b.fail(f"parallel: time budget spent after {r} rounds")
            break
        for side in rotated(sides, r):
            ctrs = b.ns.containers(PARALLEL)
            time.sleep(0.5)  # let the kernel settle after making namespaces
            for op in ("ADD", "DEL"):
                wall, bad = b.many(side, op, ctrs)
                walls[side.label][op].append(wall)
                progress(f"  round {r + 1} {side.label} {op}: {wall:.2f} s, {bad} failed")
            ids.update(container_id(ctr) for ctr in ctrs)
            b.ns.delete(ctrs)
            time.sleep(0.5)
    b.raw["parallel"] = walls
    for side in sides:
        for op in ("ADD", "DEL"):
            cpu = describe_cpu(side.cpu[op])
            b.details.append(f"parallel {op}, {side.label}: CPU per call: {cpu}")
    for op in ("ADD", "DEL"):
        handled = sides[1].handle_times(op, ids)
        b.details.append(
            f"parallel {op}, netplug+agent: handler time in the agent median "
            f"{ms(median(handled))} ms, p90 {ms(p90(handled))} ms, summed "
            f"{sum(handled) / max(len(walls['netplug+agent'][op]), 1):.2f} s per round of "
            f"{PARALLEL} (wall {median(walls['netplug+agent'][op]):.2f} s)"
        )
    b.close_sides(sides)
    b.ns.delete(spent)
    ref, np = walls["reference"], walls["netplug+agent"]
    return [
        rate_row(f"{PARALLEL} parallel ADD (wall, containers/s)", np["ADD"], ref["ADD"], PARALLEL),
        rate_row(
            f"{PARALLEL} parallel DEL (wall, containers/s)", np["DEL"], ref["DEL"], PARALLEL, False
        ),
    ]


def describe_cpu(rounds: list[dict[str, float]]) -> str:
    """Medians over the rounds, in ms: where each call's CPU went."""
    if not rounds:
        return "-"
    med = {where: median([r[where] for r in rounds]) for where in rounds[0]}
    return (
        f"plugin processes {ms(med['plugins'])} ms, agent {ms(med['agent'])} ms; "
        f"whole machine {ms(med['machine'])} ms (median of {len(rounds)} rounds)"
    )


def scenario_autostart(b: Bench, samples: int) -> list[Row]:
    """Each sample: a fresh host (namespace, store) with no agent and autostart on;
    its first ADD (which starts netplugd and waits for it to serve), then
    AFTER_START ADD+DEL pairs through that agent interleaved with the reference's
    and with an agent this script started as the unit does (each of those hosts
    has a container attached, as the autostart host's first)."""
    progress(f"autostart: {samples} fresh hosts, {AFTER_START} ADD+DEL per side after each")
    others = [b.side("reference", "ref"), b.side("netplug+agent", "netplug", agent=True)]
    spent = b.warm(others, pin=True)
    firsts: list[float] = []
    pairs: dict[str, list[float]] = {"started": [], "reference": [], "netplug+agent": []}
    for i in range(samples):
        if b.out_of_time():
            b.fail(f"autostart: time budget spent after {i} samples")
            break
        side = b.side("started", "netplug", autostart=True)
        first, *ctrs = b.ns.containers(1 + 3 * AFTER_START)
        spent += [first, *ctrs]
        call = b.one(side, "ADD", first)
        if side.started_agent() is None:
            b.fail(f"autostart: the first ADD started no agent: {side.workdir}")
        elif call.ok:
            firsts.append(call.seconds)
        for k in range(AFTER_START):
            for j, s in enumerate(rotated([side, *others], k)):
                ctr = ctrs[3 * k + j]
                add, delete = b.one(s, "ADD", ctr), b.one(s, "DEL", ctr)
                if add.ok and delete.ok:
                    pairs[s.label].append(add.seconds + delete.seconds)
        b.close_sides([side])
    b.raw["autostart"] = {"first ADD": firsts, **pairs}
    b.close_sides(others)
    b.ns.delete(spent)
    verdict = "pass" if median(firsts) <= FIRST_ADD_BAR else "FAIL"
    started, ref, managed = pairs["started"], pairs["reference"], pairs["netplug+agent"]
    return [
        Row(
            "first ADD on a host without an agent (starts it)",
            f"{ms(median(firsts))} / {ms(p90(firsts))} ms (n={len(firsts)})",
            "—",
            math.nan,
            f"≤ {FIRST_ADD_BAR:g} s",
            verdict,
        ),
        time_row("ADD+DEL through the started agent", started, ref, AUTOSTART_BAR),
        time_row("ADD+DEL, agent as the unit runs it", managed, ref, None),
        time_row("ADD+DEL, started agent / unit's agent", started, managed, None),
    ]


def _populate(b: Bench, side: Side) -> None:
    """Attach SCALE_ATTACHED containers to ``side`` (untimed set-up, bounded in time).

    The reference runs its plugin in parallel waves. netplug's calls go straight to
    its agent's socket from a thread pool (``netplug.cni.agent_client.call``, the
    plugin's own client): the same handler, store and kernel state, without a
    Python start-up per container, so set-up stays within its time budget.
    """
    progress(f"scale: attaching {SCALE_ATTACHED} containers to {side.label}")
    started, submitted, failed = time.monotonic(), 0, 0
    via = f"plugin, parallel waves of {POPULATE_WAVE}"
    client = None
    if side.kind == "netplug":
        with contextlib.suppress(ImportError):
            from netplug.cni import agent_client as client
    if client is not None:
        via = "agent socket, 16 threads"

        def attach(ctr: str) -> bool:
            with b.switch.inside(side.fd):
                try:
                    client.call(side.env("ADD", ctr), side.conf)
                except Exception as e:
                    progress(f"  agent call failed: {e!r}")
                    return False
                return True

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        while submitted < SCALE_ATTACHED and time.monotonic() - started < POPULATE_BUDGET:
            wave = b.ns.containers(min(POPULATE_WAVE, SCALE_ATTACHED - submitted))
            submitted += len(wave)
            if client is None:
                failed += b.many(side, "ADD", wave)[1]
            else:
                failed += sum(not ok for ok in pool.map(attach, wave))
    seconds = time.monotonic() - started
    listed = subprocess.run(
        ["ip", "-n", side.netns, "-o", "link", "show", "type", "veth"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    count = len(listed.splitlines())
    b.details.append(
        f"scale: {side.label} has {count} containers attached after {seconds:.1f} s "
        f"({via}; {failed} calls failed)"
    )
    if count < SCALE_ATTACHED:
        b.fail(f"scale: {side.label} has only {count} containers attached")


def scenario_scale(b: Bench, samples: int) -> list[Row]:
    """Four hosts - each plugin with none and with SCALE_ATTACHED containers attached -
    sampled interleaved, so that the machine's load hits both ends of the growth alike."""
    full_label = f"{SCALE_ATTACHED} attached"
    sides = {
        ("reference", "0 attached"): b.side("reference, 0 attached", "ref"),
        ("reference", full_label): b.side(f"reference, {full_label}", "ref"),
        ("netplug", "0 attached"): b.side("netplug+agent, 0 attached", "netplug", agent=True),
        ("netplug", full_label): b.side(f"netplug+agent, {full_label}", "netplug", agent=True),
    }
    order = list(sides.values())
    b.ns.delete(b.warm(order, pin=False))
    _populate(b, sides["reference", full_label])
    _populate(b, sides["netplug", full_label])
    progress(f"scale: {samples} ADD+DEL per host, 4 hosts interleaved")
    times, ids_by_side, unused = sample_add_del(b, order, samples, "scale")
    ids = set().union(*ids_by_side.values())
    for side in order:
        if side.kind == "netplug":
            b.details.append(
                f"scale, {side.label}: handler time in the agent ADD "
                f"{ms(median(side.handle_times('ADD', ids)))} ms, DEL "
                f"{ms(median(side.handle_times('DEL', ids)))} ms (median)"
            )
    b.raw["scale"] = times
    progress("scale: removing the populated hosts")
    b.close_sides(order)
    b.ns.delete(unused)

    def of(kind: str, state: str, op: str = "ADD") -> list[float]:
        return times[sides[kind, state].label][op]

    rows = [
        time_row(
            "ADD, 0 attached", of("netplug", "0 attached"), of("reference", "0 attached"), None
        ),
        time_row(
            f"ADD, {full_label}", of("netplug", full_label), of("reference", full_label), None
        ),
    ]
    growth = {
        (kind, op): median(of(kind, full_label, op)) / median(of(kind, "0 attached", op))
        for kind in ("netplug", "reference")
        for op in ("ADD", "DEL")
    }
    rows.append(
        Row(
            f"ADD growth, {full_label} vs 0 (median/median)",
            f"{growth['netplug', 'ADD']:.2f}x",
            f"{growth['reference', 'ADD']:.2f}x",
            growth["netplug", "ADD"] / growth["reference", "ADD"],
            "— (issue: ref ≈ 2.8x)",
        )
    )
    b.details.append(
        f"scale: DEL growth netplug {growth['netplug', 'DEL']:.2f}x, reference "
        f"{growth['reference', 'DEL']:.2f}x (DEL median with {full_label}: netplug "
        f"{ms(median(of('netplug', full_label, 'DEL')))} ms, reference "
        f"{ms(median(of('reference', full_label, 'DEL')))} ms)"
    )
    return rows


def _pyc_status(b: Bench, side: Side, when: str) -> None:
    """Run the plugin's VERSION under ``python -v`` and count modules loaded from .pyc."""
    call = Call(
        [str(PYTHON), "-v", str(NETPLUG)],
        {"PATH": PATH_ENV, "CNI_COMMAND": "VERSION"},
        b'{"cniVersion": "1.0.0"}',
    )
    b.runner.run(side.fd, [call])
    text = call.err.decode(errors="replace")
    cached = len(re.findall(r"^# \S+\.pyc matches ", text, re.M))
    source = len(re.findall(r"^# code object from '[^']+\.py'$", text, re.M))
    wrote = len(re.findall(r"^# wrote ", text, re.M))
    ours = len(re.findall(rf"^# \S*{re.escape(str(REPO))}\S+\.pyc matches ", text, re.M))
    b.details.append(
        f"pyc ({when}, clean env): {cached} modules from .pyc ({ours} of them netplug's), "
        f"{source} compiled from source, {wrote} .pyc written (PYTHONDONTWRITEBYTECODE unset)"
    )


def launcher_interpreter() -> list[str]:
    """The interpreter and flags of the plugin launcher's #! line (-I -S: no site)."""
    return NETPLUG.read_text().splitlines()[0].removeprefix("#!").split()


def _importtime(b: Bench, side: Side) -> None:
    """``-X importtime`` of ADD through the agent: the plugin process's own cost."""
    selfs: dict[str, list[float]] = {}
    cumul: dict[str, list[float]] = {}
    totals = []
    ctrs = b.ns.containers(IMPORTTIME_RUNS)
    for ctr in ctrs:
        call = side.call(
            "ADD", ctr, argv=[*launcher_interpreter(), "-X", "importtime", str(NETPLUG)]
        )
        b.runner.run(side.fd, [call])
        if not call.ok:
            b.fail(f"importtime ADD: {call.describe()}")
            continue
        total = 0.0
        for line in call.err.decode(errors="replace").splitlines():
            parts = line.removeprefix("import time:").split("|")
            if len(parts) != 3 or not parts[0].strip().isdigit():
                continue
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip())) // 2
            key = f"{'  ' * depth}{name.strip()}"
            selfs.setdefault(key, []).append(int(parts[0]) / 1e6)
            cumul.setdefault(key, []).append(int(parts[1]) / 1e6)
            total += int(parts[0]) / 1e6
        totals.append(total)
        b.one(side, "DEL", ctr)
    b.ns.delete(ctrs)
    top = sorted(cumul, key=lambda k: -median(cumul[k]))
    top_level = [k for k in top if not k.startswith(" ")][:8]
    by_self = sorted(selfs, key=lambda k: -median(selfs[k]))[:8]
    b.details.append(
        f"importtime, netplug ADD via agent (median of {len(totals)} runs): imports total "
        f"{ms(median(totals))} ms; top-level by cumulative: "
        + ", ".join(f"{k} {ms(median(cumul[k]))}" for k in top_level)
        + "; by self: "
        + ", ".join(f"{k.strip()} {ms(median(selfs[k]))}" for k in by_self)
    )
    b.raw["importtime"] = {k: median(v) for k, v in cumul.items()}


def scenario_startup(b: Bench, samples: int) -> list[Row]:
    progress(f"startup: {samples} samples each")
    side = b.side("netplug+agent", "netplug", agent=True)
    bare = b.side("netplug, no agent", "netplug")
    _pyc_status(b, side, "first run")
    spent = b.warm([side], pin=True)
    version = b'{"cniVersion": "1.0.0"}'
    env = {"PATH": PATH_ENV, "CNI_COMMAND": "VERSION"}
    programs = {
        "netplug": Call([str(NETPLUG)], env, version),
        "netplug, no agent": Call([str(NETPLUG)], env, version),
        "bridge": Call([str(BRIDGE)], env, version),
        "python -c pass": Call([str(PYTHON), "-c", "pass"], {"PATH": PATH_ENV}),
        "python -I -S -c pass": Call([str(PYTHON), "-I", "-S", "-c", "pass"], {"PATH": PATH_ENV}),
    }
    times: dict[str, list[float]] = {name: [] for name in programs}
    for i in range(samples + WARMUP_CALLS):
        if b.out_of_time():
            b.fail(f"startup: time budget spent after {i} samples")
            break
        names = list(programs)
        for name in names[i % len(names) :] + names[: i % len(names)]:
            proto = programs[name]
            call = Call(proto.argv, proto.env, proto.stdin)
            b.runner.run((bare if "no agent" in name else side).fd, [call])
            if not call.ok:
                b.fail(f"startup {name}: {call.describe()}")
            elif i >= WARMUP_CALLS:
                times[name].append(call.seconds)
    _pyc_status(b, side, "after the runs")
    _importtime(b, side)
    b.raw["startup"] = times
    b.close_sides([side, bare])
    b.ns.delete(spent)
    rows = [
        time_row("VERSION, exec to exit, agent running", times["netplug"], times["bridge"], None),
        time_row(
            "VERSION, exec to exit, no agent", times["netplug, no agent"], times["bridge"], None
        ),
    ]
    for name in ("python -c pass", "python -I -S -c pass"):
        rows.append(
            Row(
                f"{name} (venv interpreter, context)",
                f"{ms(median(times[name]))} / {ms(p90(times[name]))} ms",
                "—",
                math.nan,
            )
        )
    return rows


def scenario_profile(b: Bench, samples: int) -> None:
    """cProfile of netplug's handle() as the agent runs it: in a worker thread that
    lives in the host namespace (so its own-namespace sockets are kept), with a
    warm Host."""
    import cProfile
    import io
    import pstats

    from netplug.cni.handler import handle
    from netplug.host import Host

    side = b.side("netplug profile", "netplug")
    host = Host.open(HOST_NAME, side.store)
    profile = cProfile.Profile()
    ctrs = b.ns.containers(samples + WARMUP_CALLS)
    errors: list[str] = []

    def work() -> None:
        with b.switch.inside(side.fd):
            for i, ctr in enumerate(ctrs):
                for op in ("ADD", "DEL"):
                    if i >= WARMUP_CALLS:
                        profile.enable()
                    reply = handle(side.env(op, ctr), side.conf, lambda _conf: host)
                    profile.disable()
                    if reply.exit_code != 0:
                        errors.append(reply.stdout.decode())
                        return

    progress(f"profile: {samples} in-process ADD+DEL under cProfile")
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(timeout=CALL_TIMEOUT + samples * 5)
    host.close()
    if worker.is_alive() or errors:
        b.fail(f"profile: {'timed out' if worker.is_alive() else errors[0][:300]}")
        return
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).sort_stats("cumulative")
    stats.print_stats(25)
    stats.sort_stats("tottime").print_stats(15)
    print(out.getvalue(), file=sys.stderr)
    b.close_sides([side])
    b.ns.delete(ctrs)


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="netplug vs the reference bridge + host-local CNI plugins (needs root; "
        "works only inside network namespaces it creates and removes).",
    )
    parser.add_argument(
        "--venv",
        type=Path,
        default=REPO / ".venv",
        help="venv with netplug installed (default: %(default)s; "
        "scripts/setup makes a regular, non-editable install there)",
    )
    parser.add_argument("--samples", type=int, default=30, help="samples per side per scenario")
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="parallel rounds per side")
    parser.add_argument("--json", action="store_true", help="also print results as JSON")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also cProfile N in-process ADD+DEL of netplug's handler (to stderr)",
    )
    parser.add_argument(
        "--max-minutes", type=float, default=15.0, help="stop sampling after this long"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.samples <= 1000 or not 1 <= args.rounds <= 20:
        parser.error("--samples must be 1..1000 and --rounds 1..20")
    return args


def use_venv(venv: Path, plugin_dir: Path) -> None:
    """Run netplug from ``venv``, its plugin installed into ``plugin_dir`` by netplugctl."""
    global VENV_BIN, NETPLUG, NETPLUGD, PYTHON
    VENV_BIN = venv / "bin"
    NETPLUGD, PYTHON = VENV_BIN / "netplugd", VENV_BIN / "python"
    subprocess.run(
        [str(VENV_BIN / "netplugctl"), "install", "--no-conflist", "--bin-dir", str(plugin_dir)],
        check=True,
        capture_output=True,
        env={"PATH": PATH_ENV},
        timeout=60,
    )
    NETPLUG = plugin_dir / "netplug"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("cni_bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    plugin_dir = Path(tempfile.mkdtemp(prefix="npb-plugins-"))
    try:
        use_venv(args.venv.resolve(), plugin_dir)
        return _main(args)
    finally:
        shutil.rmtree(plugin_dir, ignore_errors=True)


def _main(args: argparse.Namespace) -> int:
    for path in (NETPLUG, NETPLUGD, PYTHON, BRIDGE, CNI_DIR / "host-local"):
        if not path.exists():
            print(f"cni_bench: {path} is missing", file=sys.stderr)
            return 2
    wanted = [s for s in SCENARIOS if not args.only or s in args.only]
    started = time.monotonic()
    bench = Bench(started + args.max_minutes * 60)
    rows: list[Row] = []

    def measure() -> None:
        progress(f"run {bench.run_id}, temp dir {bench.tmp}, scenarios {', '.join(wanted)}")
        for name in wanted:
            if name == "latency":
                rows.extend(scenario_latency(bench, args.samples))
            elif name == "parallel":
                rows.extend(scenario_parallel(bench, args.rounds))
            elif name == "scale":
                rows.extend(scenario_scale(bench, args.samples))
            elif name == "autostart":
                rows.extend(scenario_autostart(bench, args.samples))
            else:
                rows.extend(scenario_startup(bench, args.samples))
        if args.profile:
            scenario_profile(bench, min(args.profile, 200))

    def clean_up() -> None:
        progress("cleaning up namespaces, processes and the temp dir")
        bench.cleanup()

    if not run_guarded(measure, clean_up, progress):
        return 130
    headers = [
        "scenario",
        "netplug median / p90",
        "reference median / p90",
        "ratio",
        "bar",
        "result",
    ]
    print(markdown(headers, [row.cells() for row in rows]))
    print()
    for line in bench.details:
        print(f"- {line}")
    for line in bench.failures[:20]:
        print(f"- FAILURE: {line}")
    print(f"\n(total {time.monotonic() - started:.0f} s, {os.cpu_count()} CPUs)")
    if args.json:
        print(
            json.dumps(
                {
                    "rows": [dict(zip(headers, row.cells(), strict=True)) for row in rows],
                    "details": bench.details,
                    "failures": bench.failures,
                    "samples": bench.raw,
                },
                indent=1,
            )
        )
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
