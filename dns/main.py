"""``netplug-dns``: the DNS server and registration API on their own.

    netplug-dns --store URL --listen ADDR:PORT[@NETWORK] [--listen ...] [--domain D]
                [--http ADDR:PORT] [--upstream ADDR:PORT ...] [--token T] [--ttl S]

Standalone it has no networks: it answers its domain (API names, and
container names as NAME.NETWORK.DOMAIN) and forwards the rest. A listener
given as ``ADDR:PORT@NETWORK`` serves clients of NETWORK (bare names resolve).
Logs go to stderr; SIGTERM or SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from ipaddress import ip_address

from prometheus_client import disable_created_metrics

from netplug.cli_args import (
    arg_type,
    dns_ttl,
    domain,
    host_port,
    positive_seconds,
    upstream,
)
from netplug.dns.api import make_app, serve
from netplug.dns.follow import Follower
from netplug.dns.metrics import Metrics
from netplug.dns.resolve import Zone
from netplug.dns.server import DNSServer, Listener
from netplug.dns.upstream import (
    DEFAULT_BUDGET,
    RESOLV_CONF,
    Upstream,
    default_upstreams,
    is_ours,
)
from netplug.dns.writer import RegistryWriter
from netplug.event_loop import event_loop_runner
from netplug.ipam.store.base import StoreError
from netplug.ipam.store.url import DEFAULT_STORE_URL, open_store

log = logging.getLogger("netplug.dns")

READY_WAIT = 5.0  # seconds to wait for the first registry read before serving anyway


def listener(text: str) -> Listener:
    address, _, network = text.partition("@")
    if "@" in text and not network:
        raise ValueError(f"{text!r}: name the network after '@', e.g. 10.244.1.1:53@blue")
    host, port = host_port(address)
    try:
        ip_address(host.split("%")[0])
    except ValueError:
        raise ValueError(f"{text!r}: listen on an IP address, e.g. 127.0.0.1:53") from None
    return Listener(host, port, network or None)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="netplug-dns",
        description="DNS for netplug's container names and API-registered names, "
        "with an HTTP registration API; other names are forwarded upstream.",
    )
    p.add_argument("--store", default=DEFAULT_STORE_URL, help="store URL (default %(default)s)")
    p.add_argument(
        "--listen",
        action="append",
        type=arg_type(listener),
        required=True,
        metavar="ADDR:PORT[@NETWORK]",
        help="UDP and TCP address to answer on; @NETWORK makes its clients "
        "clients of that network (bare names). Repeatable; port 0 picks one",
    )
    p.add_argument(
        "--domain", type=arg_type(domain), default="netplug.internal", help="(default %(default)s)"
    )
    p.add_argument(
        "--http",
        type=arg_type(host_port),
        metavar="ADDR:PORT",
        help="serve the HTTP API here (default: none)",
    )
    p.add_argument(
        "--upstream",
        action="append",
        type=arg_type(upstream),
        metavar="ADDR[:PORT]",
        help=f"resolver for other names; repeatable (default: nameservers of {RESOLV_CONF})",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("NETPLUG_DNS_TOKEN"),
        help="bearer token that PUT and DELETE need (default: $NETPLUG_DNS_TOKEN, else none)",
    )
    p.add_argument(
        "--ttl",
        type=arg_type(dns_ttl),
        default=5,
        help="TTL of answers, seconds (default %(default)s)",
    )
    p.add_argument(
        "--upstream-timeout",
        type=arg_type(positive_seconds),
        default=DEFAULT_BUDGET,
        help="seconds for all upstreams together (default %(default)s)",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


async def run(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    metrics = Metrics()
    upstreams = (
        args.upstream
        if args.upstream is not None
        else default_upstreams((lst.host, lst.port) for lst in args.listen)
    )
    if not upstreams:
        log.warning("no upstream resolver: names outside %s get SERVFAIL", args.domain)
    server = DNSServer(
        Zone(args.domain, args.ttl),
        Upstream(upstreams, args.upstream_timeout),
        metrics=metrics,
        freebind=False,  # an address on no interface here is a mistyped --listen
    )
    follower = Follower(store, server.update, on_status=lambda up: metrics.store_up.set(int(up)))
    runner = None
    await follower.start()
    try:
        if not await follower.wait_ready(READY_WAIT):
            log.warning(
                "the store did not answer in %gs: serving without names for now", READY_WAIT
            )
        for lst in args.listen:
            try:
                await server.add_listener(lst)
            except OSError as e:
                raise OSError(e.errno, f"cannot listen on {lst}: {e.strerror}") from e
        if args.http is not None:
            app = make_app(
                RegistryWriter(store),
                domain=args.domain,
                token=args.token,
                metrics=metrics,
                health=lambda: {
                    "store": "up" if follower.up else "unreachable",
                    "revision": server.snapshot.revision,
                    "names": server.snapshot.size,
                },
            )
            runner = await serve(app, *args.http)
            for address in runner.addresses:
                log.info("http listening on %s:%d", *address[:2])
        log.info("netplug-dns ready: domain %s, upstreams %s", args.domain, upstreams or "none")
        await _until_signalled()
    finally:
        if runner is not None:
            await runner.cleanup()
        await server.close()
        await follower.stop()
        store.close()
    return 0


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("netplug-dns stopping")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options; exits 2 (argparse's way) for an --upstream that is one of our
    own listeners: every forwarded query would come back to us, again and again."""
    p = parser()
    args = p.parse_args(argv)
    ours = [(lst.host, lst.port) for lst in args.listen]
    for host, port in args.upstream or ():
        if is_ours((host, port), ours):
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            p.error(
                f"--upstream {shown} is this server's own --listen: forwarding there would "
                "loop; give the resolver other names should go to"
            )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Each series once, without a "_created" twin per label set: smaller scrapes.
    disable_created_metrics()
    try:
        return event_loop_runner()(run(args))
    except (OSError, StoreError, ValueError) as e:
        log.error("netplug-dns: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
