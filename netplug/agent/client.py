"""The plugin's side of the agent socket (standard library only: start-up path).

Wire format, one call per connection: the plugin sends one JSON object
``{"env": {...}, "stdin": "..."}`` and shuts down its writing side; the agent
answers with one JSON object (``Reply.to_wire``) and closes.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping

# Abstract unix sockets are per network namespace: each lab host's agent has
# its own without any path on disk, and a stale one vanishes with its process.
SOCKET_NAME = "\0netplugd"
REPLY_TIMEOUT = 10.0
FORWARDED_PREFIXES = ("CNI_", "NETPLUG_")


class AgentTimeout(Exception):
    """The agent accepted the call but did not answer in time."""


def forwarded_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(FORWARDED_PREFIXES)}


def call(env: Mapping[str, str], stdin: bytes, timeout: float = REPLY_TIMEOUT) -> dict | None:
    """The agent's reply, or None when no agent listens in this namespace."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        try:
            sock.connect(SOCKET_NAME)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        sock.settimeout(timeout)
        request = {"env": forwarded_env(env), "stdin": stdin.decode("utf-8", "surrogateescape")}
        try:
            sock.sendall(json.dumps(request).encode())
            sock.shutdown(socket.SHUT_WR)
            return json.loads(_read_all(sock))
        except (TimeoutError, ValueError, OSError) as e:
            raise AgentTimeout(f"netplugd did not answer within {timeout:.0f} s ({e})") from e
    finally:
        sock.close()


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
