"""The agent's side of the plugin socket: calls in, replies out, through the
same ``handle`` the plugin would run in-process.

Worker threads block in accept(2) on the one listening socket and each
carries its call through to the reply: no event loop between the socket and
the handler. The asyncio server this replaces spent about a fifth of the
agent's CPU in a burst of container starts on the loop and the hand-off to
a worker thread and back; the call is blocking work (netlink, the store)
from end to end anyway.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from netplug.agent.metrics import AgentMetrics
from netplug.cni import MAX_STDIN
from netplug.cni import agent_wire as wire
from netplug.cni.agent_client import DEADLINE, HEALTH, QUERY, SOCKET_NAME
from netplug.cni.dispatch import Reply
from netplug.cni.errors import DECODE_FAILURE
from netplug.cni.handler import handle
from netplug.cni.netconf import NetConf
from netplug.host import Host
from netplug.locks import KeyedLocks

log = logging.getLogger(__name__)

READ_TIMEOUT = 5.0
WORKERS = 8  # calls handled at once; more wait in the listen backlog
BACKLOG = 512  # a burst of container starts must not be refused (ECONNREFUSED -> no agent)
JOIN_TIMEOUT = 5.0  # half of the systemd unit's TimeoutStopSec: the loops' stop follows
ACCEPT_RETRY = 0.1
RECV_SIZE = 65536


class PluginServer:
    """Answers plugin calls on the abstract socket ``@netplugd``."""

    def __init__(
        self,
        host: Host,
        metrics: AgentMetrics,
        socket_name: str = SOCKET_NAME,
        health: Callable[[], dict] | None = None,
        served: Callable[[NetConf], None] | None = None,
    ) -> None:
        self.host = host
        self.metrics = metrics
        self.socket_name = socket_name
        self.health = health  # answers netplugctl's health query (without the HTTP API)
        self.served = served  # told each call's config it serves (the release replay)
        self.calls = 0
        self._sock: socket.socket | None = None
        self._workers: list[threading.Thread] = []
        self._closing = False
        self._count_lock = threading.Lock()
        self._attachments = KeyedLocks()

    def host_for(self, conf: NetConf) -> Host | None:
        # Only calls for this agent's own store and host name run here; the
        # plugin runs any other call itself (DESIGN: same store and hostName).
        if not self.host.serves(conf.host_name, conf.store):
            return None
        if self.served is not None:
            self.served(conf)
        return self.host

    def _handle(self, env: dict[str, str], stdin: bytes, pid: int) -> Reply:
        # The plugin's namespace paths are opened as the plugin sees them.
        return handle(env, stdin, self.host_for, pid)

    def start(self) -> None:
        """Listen, and start the workers; SystemExit when another agent listens here."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(self.socket_name)
        except OSError as e:
            sock.close()
            raise SystemExit(
                f"netplugd: cannot listen on @{self.socket_name.lstrip(chr(0))} ({e.strerror}): "
                "another netplugd already serves this network namespace; stop it first"
            ) from e
        sock.listen(BACKLOG)
        self._sock = sock
        for i in range(WORKERS):
            worker = threading.Thread(target=self._serve, name=f"cni-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def close(self) -> None:
        """Stop accepting; calls under way finish (bounded by JOIN_TIMEOUT)."""
        if self._sock is None:
            return
        self._closing = True
        self._sock.shutdown(socket.SHUT_RDWR)  # wakes every accept() with an error
        self._sock.close()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def _serve(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError as e:
                if self._closing:
                    return
                # Out of fds or memory for a moment: a worker that quit here
                # would be gone for good, and with it the fast path.
                log.warning("accepting a plugin call failed: %s", e)
                time.sleep(ACCEPT_RETRY)
                continue
            with conn:
                try:
                    self._serve_call(conn)
                except Exception:  # a bug must cost one call, not a worker
                    log.exception("plugin call failed")

    def _serve_call(self, conn: socket.socket) -> None:
        try:
            pid, uid = _peer(conn)
            if uid != 0:  # only root can have run a plugin that configures the host
                log.warning("refused a plugin call from pid %d (uid %d, not root)", pid, uid)
                return
            try:
                call = _read_within(conn, READ_TIMEOUT, wire.MAX_CALL)
            except CallTooLarge as e:
                log.warning("refused a plugin call from pid %d: %s", pid, e)
                conn.sendall(_refusal(str(e)))
                return
            env, stdin = wire.decode_call(call)
            if QUERY in env:
                conn.sendall(self._answer_query(env[QUERY]))
                return
            # Calls for one attachment run one at a time: a DEL the runtime sends
            # after an ADD it gave up on waits for that ADD, then undoes it.
            with self._one_at_a_time(env):
                if _given_up(env):
                    log.warning("skipped a %s its plugin stopped waiting for", _describe(env))
                    return
                started = time.monotonic()
                reply = self._handle(env, stdin, pid)
            self._count(env.get("CNI_COMMAND", ""), reply, time.monotonic() - started)
            status = None if reply.declined else reply.exit_code
            conn.sendall(wire.encode_reply(status, reply.log_file, reply.summary, reply.stdout))
        except (OSError, ValueError) as e:  # socket.timeout is an OSError
            log.warning("dropped a plugin call: %r", e)

    def _answer_query(self, query: str) -> bytes:
        """The agent's health as JSON (exit status 0), or status 1 for anything else."""
        if query != HEALTH or self.health is None:
            return wire.encode_reply(1, "", "", f"unknown query {query!r}".encode())
        return wire.encode_reply(0, "", "", json.dumps(self.status()).encode())

    def status(self) -> dict:
        """The agent's ``health()`` with this server's count of calls."""
        return {**(self.health() if self.health is not None else {}), "pluginCalls": self.calls}

    def _one_at_a_time(self, env: dict[str, str]) -> AbstractContextManager[None]:
        """The attachment's lock (ADD, DEL, CHECK); none for GC, STATUS, VERSION."""
        container = env.get("CNI_CONTAINERID")
        if not container:
            return nullcontext()
        return self._attachments.held((container, env.get("CNI_IFNAME")))

    def _count(self, command: str, reply: Reply, seconds: float) -> None:
        with self._count_lock:
            self.calls += 1
        command = command if command in COMMANDS else "other"
        result = "declined" if reply.declined else "ok" if reply.exit_code == 0 else "error"
        self.metrics.cni_calls.labels(command, result).inc()
        self.metrics.cni_duration.labels(command).observe(seconds)


COMMANDS = frozenset(("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"))


def _given_up(env: dict[str, str]) -> bool:
    """Whether the plugin's deadline (CLOCK_MONOTONIC, as the agent's) has passed."""
    try:
        return time.monotonic() > float(env.get(DEADLINE, "inf"))
    except ValueError:
        return False


def _describe(env: dict[str, str]) -> str:
    return (
        f"{env.get('CNI_COMMAND', '?')} of {env.get('CNI_CONTAINERID', '-')}"
        f"/{env.get('CNI_IFNAME', '-')}"
    )


def _peer(conn: socket.socket) -> tuple[int, int]:
    """PID and UID of the plugin process at the other end (SO_PEERCRED: pid, uid, gid)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


class CallTooLarge(ValueError):
    """A call longer than any plugin sends."""


def _refusal(why: str) -> bytes:
    """The reply to a call that is not read: a CNI error (exit status 1)."""
    error = {"cniVersion": "1.1.0", "code": DECODE_FAILURE, "msg": f"call refused: {why}"}
    return wire.encode_reply(1, "", f"invalid call: {why}", json.dumps(error).encode())


def _read_within(conn: socket.socket, seconds: float, limit: int) -> bytes:
    """The whole call, which must arrive within ``seconds`` and hold at most
    ``limit`` bytes: a client that trickles bytes must not hold a worker (the
    agent has WORKERS of them), nor one that sends without end its memory.
    Raises CallTooLarge as soon as more has come."""
    deadline = time.monotonic() + seconds
    chunks = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the call did not arrive within {seconds:.0f} s")
        conn.settimeout(left)
        chunk = conn.recv(RECV_SIZE)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise CallTooLarge(f"more than {limit} bytes (stdin at most {MAX_STDIN})")
        chunks.append(chunk)
