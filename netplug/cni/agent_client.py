"""The plugin's side of the agent socket (start-up path: ``_socket`` and the
framing only; the ``socket`` module alone would add its ``enum`` import)."""

import _socket
import time  # built in, and loaded before any code runs: free on the start-up path

from netplug.cni import agent_wire as wire

# Abstract unix sockets are per network namespace: each lab host's agent has
# its own without any path on disk, and a stale one vanishes with its process.
SOCKET_NAME = "\0netplugd"
REPLY_TIMEOUT = 10.0
CONNECT_RETRY, MAX_CONNECT_RETRY = 0.002, 0.05  # seconds between tries on a full backlog
FORWARDED_PREFIXES = ("CNI_", "NETPLUG_")
# CLOCK_MONOTONIC (system-wide) instant after which this plugin no longer waits:
# the agent does not start a call whose caller has already given up.
DEADLINE = "NETPLUG_DEADLINE"
# netplugctl's "how are you" (no CNI_/NETPLUG_ prefix: no plugin call ever carries it).
QUERY = "NETPLUGD_QUERY"
HEALTH = "health"


class AgentError(Exception):
    """The agent took the call but gave no usable answer; the message says why
    and what to do (the plugin reports it as "try again later")."""


class AgentTimeout(AgentError):
    """The agent did not answer in time."""


class AgentGone(AgentError):
    """The agent's end closed or reset before a whole reply arrived: it died
    or was stopped during the call."""


def forwarded_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(FORWARDED_PREFIXES)}


def call(
    env: dict[str, str],
    stdin: bytes,
    timeout: float = REPLY_TIMEOUT,
    socket_name: str = SOCKET_NAME,
) -> tuple[int | None, str, str, bytes] | None:
    """The agent's reply (see ``wire.decode_reply``), or None when no agent listens;
    raises an ``AgentError`` when one listens but gives no usable answer."""
    forwarded = forwarded_env(env)
    forwarded[DEADLINE] = f"{time.monotonic() + timeout:.3f}"
    return _exchange(wire.encode_call(forwarded, stdin), timeout, socket_name)


def query(
    what: str, timeout: float = REPLY_TIMEOUT, socket_name: str = SOCKET_NAME
) -> tuple[int | None, str, str, bytes] | None:
    """Ask the agent itself (``HEALTH``: its health as JSON on the reply's stdout);
    as ``call`` otherwise."""
    return _exchange(wire.encode_call({QUERY: what}, b""), timeout, socket_name)


def _exchange(
    frame: bytes, timeout: float, socket_name: str
) -> tuple[int | None, str, str, bytes] | None:
    """One call, all of it (connect, send, the whole reply) within ``timeout``."""
    deadline = time.monotonic() + timeout
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)  # before connect: a full backlog must not block for ever
        if not _connect(sock, socket_name, deadline):
            return None
        started = time.monotonic()
        try:
            sock.settimeout(max(deadline - started, 0.001))
            sock.sendall(frame)
            sock.shutdown(_socket.SHUT_WR)
            data = _read_all(sock, deadline)
        except TimeoutError as e:
            raise AgentTimeout(
                f"netplugd did not answer within {timeout:g} s: it is overloaded or stuck "
                "and the call may still run; try again later, and see netplugd's log"
            ) from e
        except OSError as e:  # reset, broken pipe: the agent's end is gone
            raise _gone((e.strerror or str(e)).lower(), started) from e
        return _decoded(data, started)
    finally:
        sock.close()


def _connect(sock: _socket.socket, socket_name: str, deadline: float) -> bool:
    """Connect (True), or find that no agent listens (False). A unix socket with a
    timeout gets EAGAIN at once while the agent's listen backlog is full (its
    workers are all busy): that is retried, briefly apart, until ``deadline``."""
    pause = CONNECT_RETRY
    while True:
        try:
            sock.connect(socket_name)
            return True
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except BlockingIOError as e:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AgentTimeout(
                    "netplugd took no call for the whole wait (its queue of calls stayed "
                    "full: it is overloaded or stuck); nothing was done: try again later, "
                    "and see netplugd's log"
                ) from e
            time.sleep(min(pause, left))
            pause = min(2 * pause, MAX_CONNECT_RETRY)


def _decoded(data: bytes, started: float) -> tuple[int | None, str, str, bytes]:
    if not data:
        raise _gone("it closed the connection without an answer", started)
    try:
        return wire.decode_reply(data)
    except ValueError as e:
        shown = data[:60].decode("utf-8", "replace")
        what = f"its reply is cut short or garbled: {len(data)} bytes, {shown!r}"
        raise _gone(what, started) from e


def _gone(what: str, started: float) -> AgentGone:
    return AgentGone(
        f"netplugd went away during the call ({what}) after "
        f"{time.monotonic() - started:.1f} s: the call may be half done; try again (a retry "
        "completes or undoes it), and see why netplugd stopped (its log, "
        "'systemctl status netplugd')"
    )


def _read_all(sock: _socket.socket, deadline: float) -> bytes:
    """The whole reply, which must have arrived by ``deadline`` (a reply that
    trickles in must not stretch the wait past it)."""
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the reply did not arrive in time")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
