"""``netplugd``: the per-host agent.

It serves the CNI plugin (holding the store and netlink warm, its worker
threads run the plugin's calls through the very ``handle`` the plugin would
run itself), keeps this host's record alive in the store, programs the VXLAN
peers toward every other live host, answers DNS on each local network's
gateway, and optionally serves the registration API with /metrics.

It is made of parts that know nothing of each other (README, "Design
decisions", draws them): one ``StoreView`` owns the store watch and feeds
each subscribing part (overlay, DNS registry, DNS listeners, enforcer of
segmentation and policies, release replay) on a feed of its own; the
policy report writes what the enforcer holds back to the store. Every
long-lived loop (the view, each part, the host lease) runs under a
``Supervisor``: one that fails is restarted with backoff while the others go
on, and the agent reports itself degraded meanwhile (/healthz, ``netplugctl status``,
/metrics). ``run`` reads top to bottom:
construct the parts, subscribe them, start them, serve, stop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from netplug import faults
from netplug.agent import dns as agent_dns
from netplug.agent import enforcer as agent_enforcer
from netplug.agent import overlay as agent_overlay
from netplug.agent import policy_copy as agent_policy_copy
from netplug.agent.carry_file import CarryFile
from netplug.agent.dns import AgentDNS
from netplug.agent.enforcement import Enforcement
from netplug.agent.enforcer import Enforcer
from netplug.agent.metrics import AgentMetrics
from netplug.agent.overlay import Overlay
from netplug.agent.plugin_server import PluginServer
from netplug.agent.policy_copy import PolicyCopy
from netplug.agent.policy_report import COUNTERS_PERIOD, PolicyReport
from netplug.agent.records import BadRecords
from netplug.agent.registration import DEFAULT_TTL, HostNameTaken, HostRegistration
from netplug.agent.releases import ReleaseReplay
from netplug.agent.reset_carry import RECOVER_GRACE
from netplug.agent.run_dirs import RunDirs
from netplug.agent.store_view import StoreView
from netplug.agent.supervisor import Supervisor, overall
from netplug.cli_args import arg_type, domain, host_port, upstream
from netplug.cni import segmentation
from netplug.dns.metrics import Metrics
from netplug.dns.writer import RegistryWriter
from netplug.event_loop import event_loop_runner
from netplug.host import Host
from netplug.ipam import identity
from netplug.ipam.schema import Hosts
from netplug.ipam.store.base import StoreError, StoreReset
from netplug.ipam.store.url import DEFAULT_STORE_URL
from netplug.names import HOST_NAME
from netplug.net import conntrack, netns, policy_table, vxlan

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("netplugd")

START_FAULT = "agent-start"  # NETPLUG_FAULTS point: the agent exits before it serves
LOOPS_STOP_TIMEOUT = 5.0  # the loops wait on their stop event at most a second or so


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="netplugd",
        description="netplug's per-host agent: serves the CNI plugin over @netplugd "
        "(abstract unix socket of this network namespace).",
    )
    parser.add_argument(
        "--store",
        default=DEFAULT_STORE_URL,
        help="store URL, as in the network config (default: %(default)s)",
    )
    parser.add_argument(
        "--host-name",
        type=HOST_NAME,
        default=os.environ.get("NETPLUG_HOSTNAME") or socket.gethostname(),
        help="this host's name in the store, as the config's hostName "
        "(default: $NETPLUG_HOSTNAME, else the machine's hostname)",
    )
    parser.add_argument(
        "--run-dir",
        default="/run/netplug",
        help="where this host remembers its store's identity, as the configs' runDir: "
        "netplugd refuses to start on a store that was reset or replaced "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--pid-file",
        help="write this agent's PID here once it serves @netplugd, removed when it stops "
        "(the plugin passes RUNDIR/HOST/netplugd.pid to an agent it starts)",
    )
    parser.add_argument(
        "--underlay-device", help="the VXLAN underlay interface (default: the default route's)"
    )
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=DEFAULT_TTL,
        help="seconds this host stays in the overlay after its agent stops "
        "renewing (default: %(default)s)",
    )
    parser.add_argument(
        "--domain",
        type=domain,
        default="netplug.internal",
        help="the DNS zone; each network answers as NAME.NETWORK.DOMAIN "
        "(default: %(default)s; match the configs' dns.domain)",
    )
    parser.add_argument(
        "--upstream",
        type=arg_type(_upstream),
        action="append",
        metavar="ADDR:PORT",
        help="resolver for names outside the zone, repeatable; 'none': answer SERVFAIL "
        "(default: /etc/resolv.conf's)",
    )
    parser.add_argument(
        "--http",
        type=arg_type(host_port),
        metavar="ADDR:PORT",
        help="serve the registration API, /healthz and /metrics here (default: off)",
    )
    parser.add_argument(
        "--counters-period",
        type=arg_type(_seconds),
        default=COUNTERS_PERIOD,
        metavar="SECONDS",
        help="write this host's policy counters to the store at most this often; a new "
        "policy revision or error is written at once (default: %(default)g)",
    )
    parser.add_argument(
        "--recover-grace",
        type=arg_type(_seconds),
        default=RECOVER_GRACE,
        metavar="SECONDS",
        help="after a store reset, keep the records (overlay peers, DNS names, policy "
        "set elements) of the hosts that have not run `netplugctl recover` yet for up "
        "to this long (default: %(default)g)",
    )
    parser.add_argument("--token", help="bearer token the HTTP API requires for writes")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser.parse_args(argv)


def _seconds(text: str) -> float:
    seconds = float(text)
    if not seconds >= 0:  # also NaN
        raise ValueError(f"{text!r}: expected seconds, 0 or more")
    return seconds


def _upstream(text: str) -> tuple[str, int] | None:
    return None if text == "none" else upstream(text)


def _vtep(device: str | None) -> str:
    with netns.handle() as ipr:
        under = vxlan.underlay(ipr, device)
    return str(under.address) if under else ""


async def run(args: argparse.Namespace) -> None:
    host = Host.open(args.host_name, args.store)
    memory = host.store_memory(args.run_dir)
    registry = CollectorRegistry()
    agent_metrics, dns_metrics = AgentMetrics(registry), Metrics(registry)
    supervisor = Supervisor()
    agent_metrics.follow_loops(supervisor.health)
    bad_records = BadRecords(agent_metrics.count_bad_record)
    upstreams = None if args.upstream is None else [u for u in args.upstream if u]

    def trust() -> None:
        """Follow only the store this host knows: a reset one keeps what is programmed."""
        identity.check(host.store, memory)

    # The parts. None knows another: the store view feeds each of them.
    view = StoreView(
        host.store,
        trust,
        on_status=lambda up: dns_metrics.store_up.set(int(up)),
        host=host.name,
        recover_grace=args.recover_grace,
        carry_file=CarryFile(memory),
    )
    overlay = Overlay(host.name, bad_records, agent_metrics.reconciles.inc)
    dns = AgentDNS(host.name, args.domain, upstreams, dns_metrics, bad_records=bad_records)
    run_dirs = RunDirs([args.run_dir])  # and each one a served call names
    releases = ReleaseReplay(host, run_dirs)
    policy_copy = PolicyCopy(host.name, run_dirs)
    if not policy_table.keep_context():  # in-process batches: an ADD's costs no exec
        log.info("libnftables not found: the enforcer runs the nft command per batch")
    report = PolicyReport(host.store, host.name, lambda: enforcer.state, args.counters_period)

    def enforcement(state: Enforcement, took: float | None) -> None:
        agent_metrics.enforcement(state, took)
        report.wake()  # the new revision (or the error) in the store at once

    host.conntrack = conntrack.Deleter()  # made here: its thread deletes in this namespace
    enforcer = Enforcer(
        host.name,
        lambda: segmentation.read_store(host)[0],
        bad_records,
        enforcement,
        forget=host.conntrack.submit,
    )
    host.enforcer = enforcer  # ADD and DEL cover their containers through it
    agent_metrics.follow_policies(lambda: report.counters, lambda: enforcer.state)

    def health() -> dict:
        """What /healthz and ``netplugctl status`` (over @netplugd) report: "degraded"
        while a loop fails, with each loop's state and last error, or while the store
        is reset or corrupt (with the error naming the fix), or while nft refuses
        netplug's table (``enforcement``, with nft's error), and the records
        the parts skip as unreadable (listed; they do not degrade the agent)."""
        loops, store = supervisor.health(), view.health()
        return {
            "status": overall(loops, "error" in store, enforcer.state.failing),
            "host": host.name,
            "store": store["state"],
            **({"storeError": store["error"]} if "error" in store else {}),
            **{k: store[k] for k in ("carried", "carriedFor") if k in store},
            "dnsListeners": [str(lst) for lst in dns.server.listeners],
            "loops": loops,
            "enforcement": enforcer.health(),
            "badRecords": bad_records.health(),
        }

    server = PluginServer(
        host,
        agent_metrics,
        health=health,  # with its count of calls: PluginServer.status
        served=lambda conf: run_dirs.learn(conf.run_dir),  # where releases may wait
    )

    # Who follows which records of the store, each on a feed of its own.
    parts = {
        "overlay": (overlay.follow, agent_overlay.WATCHED),
        "dns-registry": (dns.follow_registry, agent_dns.REGISTRY),
        "dns-listeners": (dns.follow_listeners, agent_dns.LISTENERS),
        "enforcer": (enforcer.follow, agent_enforcer.WATCHED),
        "pending-releases": (releases.follow, ()),  # only the view's full reads
        "policy-copy": (policy_copy.follow, agent_policy_copy.WATCHED),
    }
    feeds = {name: view.subscribe(name, prefixes) for name, (_, prefixes) in parts.items()}
    host_record = view.subscribe("host-record", (Hosts.key(host.name),))

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    http = None
    pid_file = PidFile(args.pid_file)
    try:
        host.store.status()
        identity.verify(host.store, memory)
        server.start()  # first: a second agent in this namespace fails here
        pid_file.write()  # only now: a refused second agent leaves the first one's alone
        # pyroute2's blocking API refuses a thread that runs an event loop.
        vtep = await asyncio.to_thread(_vtep, args.underlay_device)
        registration = HostRegistration(host.store, host.name, vtep, args.lease_ttl, trust)
        await asyncio.to_thread(registration.acquire)

        # Start: the lease, every part (each waits for its first feed), then the view.
        dns.bind_loop()
        supervisor.start("registration", registration.keep_alive)
        supervisor.start("host-record", host_record.runs(registration.follow))
        for name, (follow, _) in parts.items():
            supervisor.start(name, feeds[name].runs(follow))
        supervisor.start("store-view", view.run)
        supervisor.start("policy-report", lambda stop: report.run(lambda: registration.lease, stop))
        if args.http:
            http = await _serve_http(args, host, dns_metrics, server)
        log.info(
            "serving host %s (VTEP %s) on store %s at @netplugd",
            host.name,
            registration.vtep or "none",
            host.store.url,
        )
        await stop.wait()
        log.info("stopping after %d plugin calls", server.calls)
    finally:  # in reverse: the loops, the HTTP API, DNS, the plugin socket, the store
        await asyncio.to_thread(supervisor.stop, LOOPS_STOP_TIMEOUT)
        if http is not None:
            await http.cleanup()
        await dns.close()
        await asyncio.to_thread(server.close)
        pid_file.remove()
        host.close()


class PidFile:
    """``--pid-file``: this process's PID, written whole (a reader never sees half of
    it) and removed only while it still names this process."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def write(self) -> None:
        if self.path:
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(tmp, self.path)

    def remove(self) -> None:
        if not self.path:
            return
        try:
            with open(self.path) as f:
                ours = f.read().strip() == str(os.getpid())
            if ours:
                os.unlink(self.path)
        except OSError:  # gone already, or the run dir with it
            pass


async def _serve_http(
    args: argparse.Namespace, host: Host, metrics: Metrics, server: PluginServer
) -> web.AppRunner:
    """The registration API, /healthz and /metrics (agent and DNS) on ``--http``.
    aiohttp is imported only here: most agents serve no HTTP, and it is a third of
    their start-up, which the first ADD on a host waits for (autostart)."""
    from netplug.dns.api import make_app, serve

    app = make_app(
        RegistryWriter(host.store),
        domain=args.domain,
        token=args.token,
        metrics=metrics,
        health=server.status,
    )
    runner = await serve(app, *args.http)
    log.info("http API on %s:%d", *args.http)
    return runner


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if armed := faults.notice():
            log.warning("%s", armed)
        faults.check(START_FAULT, RuntimeError)
    except faults.FaultSpecError as e:
        log.error("refusing to start: %s", e)
        return 2
    except RuntimeError as e:  # an injected failure, as an agent that cannot start
        log.error("refusing to start: %s", e)
        return 1
    try:
        event_loop_runner()(run(args))  # uvloop: DNS over TCP, forwarding and the API run here
    except StoreReset as e:
        log.error("refusing to start: %s", e)
        return 1
    except StoreError as e:
        log.error("store %s is unusable: %s", args.store, e)
        return 1
    except HostNameTaken as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
