"""The plugin's side of the agent socket (start-up path: ``_socket`` and the
framing only; the ``socket`` module alone would add its ``enum`` import)."""

from __future__ import annotations

import _socket
import time  # built in, and loaded before any code runs: free on the start-up path

from netplug.agent import wire

# Abstract unix sockets are per network namespace: each lab host's agent has
# its own without any path on disk, and a stale one vanishes with its process.
SOCKET_NAME = "\0netplugd"
REPLY_TIMEOUT = 10.0
FORWARDED_PREFIXES = ("CNI_", "NETPLUG_")
# CLOCK_MONOTONIC (system-wide) instant after which this plugin no longer waits:
# the agent does not start a call whose caller has already given up.
DEADLINE = "NETPLUG_DEADLINE"


class AgentTimeout(Exception):
    """The agent accepted the call but did not answer in time."""


def forwarded_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(FORWARDED_PREFIXES)}


def call(
    env: dict[str, str],
    stdin: bytes,
    timeout: float = REPLY_TIMEOUT,
    socket_name: str = SOCKET_NAME,
) -> tuple[int | None, str, str, bytes] | None:
    """The agent's reply (see ``wire.decode_reply``), or None when no agent listens."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        try:
            sock.connect(socket_name)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        sock.settimeout(timeout)
        forwarded = forwarded_env(env)
        forwarded[DEADLINE] = f"{time.monotonic() + timeout:.3f}"
        try:
            sock.sendall(wire.encode_call(forwarded, stdin))
            sock.shutdown(_socket.SHUT_WR)
            return wire.decode_reply(_read_all(sock))
        except (OSError, ValueError) as e:  # socket.timeout is an OSError
            raise AgentTimeout(f"netplugd did not answer within {timeout:.0f} s ({e})") from e
    finally:
        sock.close()


def _read_all(sock: _socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
