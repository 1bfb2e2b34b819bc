"""The agent's side of the plugin socket: calls in, replies out, through the
same ``handle`` the plugin would run in-process."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time

from netplug.agent import wire
from netplug.agent.client import SOCKET_NAME
from netplug.agent.metrics import AgentMetrics
from netplug.cni.dispatch import Reply
from netplug.cni.handler import handle
from netplug.cni.netconf import NetConf
from netplug.host import Host
from netplug.ipam.pending import PendingReleases
from netplug.net import netns

log = logging.getLogger(__name__)

READ_TIMEOUT = 5.0
PENDING_INTERVAL = 5.0


class PluginServer:
    """Answers plugin calls on the abstract socket ``@netplugd``."""

    def __init__(self, host: Host, metrics: AgentMetrics, socket_name: str = SOCKET_NAME) -> None:
        self.host = host
        self.metrics = metrics
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
            started = time.monotonic()
            reply = await asyncio.to_thread(self._handle, env, stdin, _peer_pid(writer))
            self._count(env.get("CNI_COMMAND", ""), reply, time.monotonic() - started)
            status = None if reply.declined else reply.exit_code
            writer.write(wire.encode_reply(status, reply.log_file, reply.summary, reply.stdout))
            await writer.drain()
        except (TimeoutError, ValueError) as e:
            log.warning("dropped a malformed plugin call: %r", e)
        finally:
            writer.close()

    def _count(self, command: str, reply: Reply, seconds: float) -> None:
        self.calls += 1
        command = command if command in COMMANDS else "other"
        result = "declined" if reply.declined else "ok" if reply.exit_code == 0 else "error"
        self.metrics.cni_calls.labels(command, result).inc()
        self.metrics.cni_duration.labels(command).observe(seconds)


COMMANDS = frozenset(("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"))


def _peer_pid(writer: asyncio.StreamWriter) -> int:
    """The PID of the plugin process at the other end (SO_PEERCRED: pid, uid, gid)."""
    sock = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[0]
