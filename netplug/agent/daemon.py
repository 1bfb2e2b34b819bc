"""``netplugd``: the per-host agent.

It serves the CNI plugin (holding the store and netlink warm, it runs the
plugin's calls in a thread pool through the very ``handle`` the plugin would
run itself), keeps this host's record alive in the store, and programs the
VXLAN peers toward every other live host.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from netplug.agent import wire
from netplug.agent.client import SOCKET_NAME
from netplug.agent.overlay import Overlay
from netplug.agent.registration import DEFAULT_TTL, HostNameTaken, HostRegistration
from netplug.cni.dispatch import Reply
from netplug.cni.handler import handle
from netplug.cni.request import NetConf
from netplug.host import Host
from netplug.ipam.pending import PendingReleases
from netplug.ipam.store.base import StoreError
from netplug.ipam.store.url import DEFAULT_STORE_URL
from netplug.net import netns, vxlan
from netplug.net.teardown import DeferredTeardown

log = logging.getLogger("netplugd")

READ_TIMEOUT = 5.0
WORKERS = 8
PENDING_INTERVAL = 5.0


class PluginServer:
    """Answers plugin calls on the abstract socket ``@netplugd``."""

    def __init__(self, host: Host, socket_name: str = SOCKET_NAME) -> None:
        self.host = host
        self.socket_name = socket_name
        self.calls = 0
        self.run_dirs: set[str] = set()
        self._server: asyncio.AbstractServer | None = None

    def host_for(self, conf: NetConf) -> Host | None:
        # Only calls for this agent's own store and host name run here; the
        # plugin runs any other call itself (DESIGN: same store and hostName).
        if not self.host.serves(conf.host_name, conf.store):
            return None
        self.run_dirs.add(conf.run_dir)
        return self.host

    def _handle(self, env: dict[str, str], stdin: bytes, pid: int) -> Reply:
        with netns.paths_seen_by(pid):
            return handle(env, stdin, self.host_for)

    def settle_pending(self, stop: threading.Event) -> None:
        """Replay releases deferred by a store outage, in every runDir calls named."""
        while not stop.wait(PENDING_INTERVAL):
            for run_dir in list(self.run_dirs):
                pending = PendingReleases(run_dir, self.host.name)
                if pending:
                    pending.replay(self.host.ipam)

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_unix_server(self._serve_call, path=self.socket_name)
        except OSError as e:
            raise SystemExit(
                f"netplugd: cannot listen on @{self.socket_name.lstrip(chr(0))} ({e.strerror}): "
                "another netplugd already serves this network namespace; stop it first"
            ) from e

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve_call(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await asyncio.wait_for(reader.read(), READ_TIMEOUT)
            env, stdin = wire.decode_call(data)
            reply = await asyncio.to_thread(self._handle, env, stdin, _peer_pid(writer))
            self.calls += 1
            status = None if reply.declined else reply.exit_code
            writer.write(wire.encode_reply(status, reply.log_file, reply.summary, reply.stdout))
            await writer.drain()
        except (TimeoutError, ValueError) as e:
            log.warning("dropped a malformed plugin call: %r", e)
        finally:
            writer.close()


def _peer_pid(writer: asyncio.StreamWriter) -> int:
    """The PID of the plugin process at the other end (SO_PEERCRED: pid, uid, gid)."""
    sock = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[0]


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
        default=os.environ.get("NETPLUG_HOSTNAME") or socket.gethostname(),
        help="this host's name in the store, as the config's hostName "
        "(default: $NETPLUG_HOSTNAME, else the machine's hostname)",
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
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser.parse_args(argv)


def _vtep(device: str | None) -> str:
    with netns.handle() as ipr:
        under = vxlan.underlay(ipr, device)
    return str(under.address) if under else ""


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(WORKERS, thread_name_prefix="cni"))
    host = Host.open(args.host_name, args.store, DeferredTeardown())
    server = PluginServer(host)
    stop = asyncio.Event()
    threads_stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        host.store.status()
        await server.start()  # first: a second agent in this namespace fails here
        # pyroute2's blocking API refuses a thread that runs an event loop.
        vtep = await asyncio.to_thread(_vtep, args.underlay_device)
        registration = HostRegistration(host.store, host.name, vtep, args.lease_ttl)
        await asyncio.to_thread(registration.acquire)
        overlay = Overlay(host.store, host.name)
        for target in (registration.keep_alive, overlay.follow, server.settle_pending):
            threading.Thread(
                target=target, args=(threads_stop,), daemon=True, name=target.__qualname__
            ).start()
        log.info(
            "serving host %s (VTEP %s) on store %s at @netplugd",
            host.name,
            registration.vtep or "none",
            host.store.url,
        )
        await stop.wait()
        log.info("stopping after %d plugin calls", server.calls)
    finally:
        threads_stop.set()
        await server.close()
        host.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(run(args))
    except StoreError as e:
        log.error("store %s is unusable: %s", args.store, e)
        return 1
    except HostNameTaken as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
