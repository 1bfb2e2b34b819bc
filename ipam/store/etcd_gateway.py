"""Calls to etcd's JSON gateway (``POST /v3/...``): the transport of ``EtcdStore``.

- ``Gateway.call``: one unary request over this thread's keep-alive
  connection, failing over to the next endpoint when one cannot be reached,
  within ``ATTEMPT_TIMEOUT`` per attempt and ``TOTAL_TIMEOUT`` in all; for
  ``DOWN_HOLD`` after a call found every endpoint down, a call tries each once.
- ``WatchStream``: one streamed ``/v3/watch`` on a connection of its own,
  read message by message with a timeout that leaves the stream usable.

Every request asks etcd to require a leader (``hasleader`` metadata, as
clientv3's ``WithRequireLeader``): a member cut off from its cluster then says
"no leader" at once instead of hanging, and cancels the watches it serves, so
that clients move to another member. While the cluster elects a leader, calls
keep trying the members for up to ``TOTAL_TIMEOUT`` (an election takes about
one election timeout), and that is not counted as an outage for ``DOWN_HOLD``.

``ssl`` is imported only for ``etcds://``. A request that may have reached
etcd is not sent again unless it is safe to repeat (``idempotent``) or its
connection was an idle one that the server had already closed: a write whose
answer was lost is reported as such, since repeating a compare-and-swap could
make its caller believe it lost.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import OutcomeUnknown, StoreUnavailable
from .etcd_http import Connection, ProtocolError, StaleConnection

if TYPE_CHECKING:
    import ssl

ATTEMPT_TIMEOUT = 2.0  # seconds: one connection attempt, or one request and its answer
TOTAL_TIMEOUT = 4.5  # seconds: a call gives up after this, whatever it tried
RETRY_WINDOW = 1.0  # seconds: how long quick failures (refused) are tried again
# Seconds after a call found every endpoint down during which a call tries each endpoint
# once, without RETRY_WINDOW's rounds: one CNI call often makes several store calls (the
# identity check, then the command), and each would otherwise wait out the same outage.
DOWN_HOLD = 0.5
# gRPC codes that etcd answers while it elects a leader or restarts: worth another try.
_TRANSIENT = {14}  # UNAVAILABLE (no leader, leader changed, stopping)
# What etcd answers before it proposes anything: a write so refused was not applied.
_NOT_PROPOSED = ("etcdserver: no leader", "raft proposal dropped", "etcdserver: not capable")
RAISE, RETRY, UNKNOWN = "raise", "retry", "unknown"


class EtcdError(Exception):
    """etcd answered with an error: ``code`` is its gRPC status code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def error_of(reply: Any) -> EtcdError | None:
    """The error in a gateway answer (unary, or one message of a stream), if any."""
    if not isinstance(reply, dict):
        return EtcdError(2, f"unexpected answer {reply!r}")
    error = reply.get("error")
    if error is None:
        return None
    if isinstance(error, dict):  # a stream's error: {"grpc_code", "http_code", "message"}
        return EtcdError(int(error.get("grpc_code", 2)), str(error.get("message", error)))
    return EtcdError(int(reply.get("code", 2)), str(reply.get("message") or error))


def verdict(error: EtcdError, idempotent: bool) -> str:
    """What a call does with etcd's error answer (pure): RAISE it, RETRY on another
    member (nothing was applied, or repeating is harmless), or give up with the
    outcome UNKNOWN (a write that may have been applied: "request timed out",
    "leader changed" while it was proposed)."""
    not_proposed = any(text in str(error) for text in _NOT_PROPOSED)
    if error.code not in _TRANSIENT and not not_proposed:
        return RAISE
    return RETRY if idempotent or not_proposed else UNKNOWN


def endpoint_order(preferred: int, count: int, avoid: int | None = None) -> list[int]:
    """The order to try ``count`` endpoints in (pure): from ``preferred`` on, or,
    after a failure on ``avoid``, from the one after it, ``avoid`` last."""
    start = preferred if avoid is None else avoid + 1
    return [(start + i) % count for i in range(count)]


def leaderless(error: EtcdError) -> bool:
    """The member answered but has no leader: the cluster is electing (or cut off)."""
    return any(text in str(error) for text in _NOT_PROPOSED)


class Gateway:
    """Calls to etcd's JSON gateway at ``endpoints``, safe to share between threads."""

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        tls: ssl.SSLContext | None = None,
        attempt_timeout: float = ATTEMPT_TIMEOUT,
        total_timeout: float = TOTAL_TIMEOUT,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self.tls = tls
        self.attempt_timeout = attempt_timeout
        self.total_timeout = total_timeout
        self._preferred = 0  # the endpoint that answered last: where new connections go
        self._local = threading.local()
        self._conns: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._down: float | None = None  # when a call last found every endpoint down
        scheme = "https" if tls else "http"
        self.names = ",".join(f"{scheme}://{hostport(h, p)}" for h, p in self.endpoints)

    def call(self, path: str, body: dict[str, Any], idempotent: bool) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>``; the decoded answer, ``EtcdError`` if etcd
        refused it, ``StoreUnavailable`` if no endpoint answered in time."""
        payload = json.dumps(body, separators=(",", ":")).encode()
        started = time.monotonic()
        retry_window = 0.0 if self._just_down(started) else RETRY_WINDOW
        deadline = started + self.total_timeout
        failures: list[str] = []
        backoff = 0.05
        refused_tls = False  # a TLS handshake failed: trying again will not help
        electing = False  # a member answered "no leader": worth waiting for the election
        while True:
            attempt_deadline = min(deadline, time.monotonic() + self.attempt_timeout)
            conn, index, sent = None, self._preferred, False
            try:
                conn = self._conn(attempt_deadline)
                index = conn.endpoint
                sent = True
                conn.send(path, payload)
                status, _ = conn.head(attempt_deadline)
                data = conn.body(attempt_deadline)
                if not conn.reusable:
                    self._drop(conn)
                reply = _decode(data, status)
                error = error_of(reply)
                if error is None:
                    self._down = None
                    return reply
                decision = verdict(error, idempotent)
                if decision == RAISE:
                    raise error
                failures.append(f"{self._name(index)}: {error}")
                electing = electing or leaderless(error)
                self._drop(conn, failover=True)
                if decision == UNKNOWN:
                    raise self.unavailable(failures, unknown=True)
            except StaleConnection:
                assert conn is not None
                self._drop(conn)  # it never got the request: at once, on a new connection
                continue
            except OSError as e:
                failures.append(f"{self._name(index)}: {_describe(e)}")
                refused_tls = refused_tls or type(e).__module__ == "ssl"
                if conn is not None:
                    self._drop(conn, failover=True)
                else:
                    self._failover(index)
                if sent and not idempotent:
                    raise self.unavailable(failures, unknown=True) from e
            now = time.monotonic()
            if now >= deadline:
                raise self._all_down(failures, electing)
            # A full round of failures: pause, then try them all again (for a while).
            if len(failures) % len(self.endpoints) == 0:
                waited_enough = now - started > retry_window and not electing
                if refused_tls or waited_enough or now + backoff >= deadline:
                    raise self._all_down(failures, electing)
                time.sleep(backoff)
                backoff = min(backoff * 2, 0.2 if electing else 1.0)

    def open_watch(self, body: dict[str, Any], avoid: int | None = None) -> WatchStream:
        """A streamed ``/v3/watch`` with ``body`` as its one request, on the first
        endpoint that takes it, trying endpoint ``avoid`` (where the last stream
        failed) last."""
        failures: list[str] = []
        for index in endpoint_order(self._preferred, len(self.endpoints), avoid):
            try:
                return WatchStream(self, index, body)
            except OSError as e:
                failures.append(f"{self._name(index)}: {_describe(e)}")
        raise self.unavailable(failures)

    def connect(self, index: int, deadline: float) -> Connection:
        host, port = self.endpoints[index]
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise TimeoutError("timed out")
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls:
                sock = self.tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        return Connection(sock, index, hostport(host, port))

    def unavailable(self, failures: list[str], unknown: bool = False) -> StoreUnavailable:
        seen = "; ".join(dict.fromkeys(failures)) or "no attempt"
        if unknown:
            return OutcomeUnknown(
                f"etcd at {self.names} lost the answer to a write ({seen}): it may or may "
                "not have been applied; read the keys again before retrying"
            )
        return StoreUnavailable(
            f"etcd at {self.names} cannot be reached ({seen}): start etcd or fix the "
            "store URL (etcd://HOST:PORT[,HOST:PORT]), then try again later"
        )

    def _all_down(self, failures: list[str], electing: bool = False) -> StoreUnavailable:
        """The error for a call that no endpoint answered, remembered for DOWN_HOLD
        unless members answered that they are electing a leader (not an outage)."""
        if not electing:
            self._down = time.monotonic()
            return self.unavailable(failures)
        seen = "; ".join(dict.fromkeys(failures))
        return StoreUnavailable(
            f"etcd at {self.names} has no leader ({seen}): the cluster is electing one or "
            "has lost its quorum (start the stopped members); nothing was written, try again later"
        )

    def probe(self, index: int, timeout: float) -> bool:
        """Whether endpoint ``index`` answers within ``timeout`` and knows a leader
        (a watch on a member that hangs, or that lost its cluster, sees nothing)."""
        deadline = time.monotonic() + timeout
        try:
            conn = self.connect(index, deadline)
        except OSError:
            return False
        try:
            conn.send("maintenance/status", b"{}")
            status, _ = conn.head(deadline)
            reply = _decode(conn.body(deadline), status)
        except OSError:
            return False
        finally:
            conn.close()
        return error_of(reply) is None and int(reply.get("leader", 0) or 0) != 0

    def _just_down(self, now: float) -> bool:
        down = self._down
        return down is not None and now - down < DOWN_HOLD

    def close(self) -> None:
        """Close this process's connections; the next call opens new ones."""
        with self._lock:
            conns, self._conns = list(self._conns), weakref.WeakSet()
            self._local = threading.local()
        for conn in conns:
            if conn.pid == os.getpid():
                conn.close()

    def _conn(self, deadline: float) -> Connection:
        """This thread's connection, opened to the preferred endpoint if it has none
        (a forked child leaves the parent's alone: both would talk on it at once)."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.pid != os.getpid():
            conn = self.connect(self._preferred, deadline)
            self._local.conn = conn
            with self._lock:
                self._conns.add(conn)
        return conn

    def _drop(self, conn: Connection, failover: bool = False) -> None:
        conn.close()
        self._local.conn = None
        if failover:
            self._failover(conn.endpoint)

    def _failover(self, index: int) -> None:
        if self._preferred == index:
            self._preferred = (index + 1) % len(self.endpoints)

    def _name(self, index: int) -> str:
        return hostport(*self.endpoints[index])


class WatchStream:
    """One ``POST /v3/watch``: an answer that streams JSON messages, chunked."""

    def __init__(self, gateway: Gateway, index: int, body: dict[str, Any]) -> None:
        deadline = time.monotonic() + gateway.attempt_timeout
        self.conn = gateway.connect(index, deadline)
        self._data = bytearray()  # de-chunked, not yet parsed
        try:
            self.conn.send("watch", json.dumps(body, separators=(",", ":")).encode())
            status, headers = self.conn.head(deadline)
            if status != 200 or headers.get(b"transfer-encoding") != b"chunked":
                error = self.conn.body(deadline)[:200]
                raise ProtocolError(f"watch answered HTTP {status}: {error!r}")
        except BaseException:
            self.close()
            raise

    def next_message(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON message, or None once ``deadline`` (monotonic) passes.
        Raises OSError (ConnectionError at the end of the stream) when it breaks."""
        while True:
            line, sep, rest = self._data.partition(b"\n")
            if sep:
                self._data = rest
                if line.strip():
                    message = json.loads(line)
                    if not isinstance(message, dict):
                        raise ProtocolError(f"unexpected watch message {message!r}")
                    return message
                continue
            piece = self.conn.read(deadline)
            if piece is None:
                raise ConnectionError("the server ended the watch stream")
            if not piece:
                return None
            self._data += piece

    def close(self) -> None:
        self.conn.close()


def tls_context(cacert: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """A client TLS context: ``cacert`` verifies the server (else the system's
    CAs), ``cert`` and ``key`` identify this client."""
    import ssl  # only etcds:// pays for it

    try:
        context = ssl.create_default_context(cafile=cacert)
        if cert and key:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise StoreUnavailable(
            f"cannot load the TLS files of the store URL ({e}): check the paths given as "
            "cacert=, cert= and key= and that this user can read them"
        ) from e
    return context


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _decode(data: bytes, status: int) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return {"error": f"HTTP {status}: {data[:200]!r}", "code": 14 if status >= 500 else 2}


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    return str(e) or type(e).__name__
