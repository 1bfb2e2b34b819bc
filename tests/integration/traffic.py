"""Real traffic between container namespaces: a TCP server, one-shot and looping
clients, and the checks the segmentation tests make with them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import processes
from netplug_env import ping

PORT = 8080
# Listens on every address, v4 and v6; answers "hi" to each connection.
SERVER = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET6)\n"
    "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('::', int(sys.argv[1]))); s.listen(64)\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hi'); c.close()\n"
)
# Exit status 0 when the server answered within a second.
CLIENT = (
    "import socket, sys\n"
    "try:\n"
    "    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)\n"
    "    sys.exit(0 if c.recv(2) == b'hi' else 1)\n"
    "except OSError:\n"
    "    sys.exit(1)\n"
)
# Connects in a loop for argv[3] seconds, each attempt given argv[4] seconds;
# prints how many connections got an answer and how many did not. The pause
# after each keeps it under about 2000 a second: unpaced it made 30k in 6 s,
# more than the ephemeral ports (28k), and a port reused while the server still
# held its last connection in TIME_WAIT lost a SYN now and then (answered by
# the retransmit a second later: counted as not answered).
HAMMER = (
    "import socket, sys, time\n"
    "end, ok, failed = time.monotonic() + float(sys.argv[3]), 0, 0\n"
    "while time.monotonic() < end:\n"
    "    try:\n"
    "        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[4]))\n"
    "        c.settimeout(float(sys.argv[4]))\n"
    "        got = c.recv(2) == b'hi'; c.close()\n"
    "        ok, failed = ok + got, failed + (not got)\n"
    "        time.sleep(0.0005)\n"
    "    except OSError:\n"
    "        failed += 1; time.sleep(0.001)\n"
    "print(ok, failed, flush=True)\n"
)


def tcp(netns: str, address: str) -> bool:
    cmd = ["ip", "netns", "exec", netns, sys.executable, "-c", CLIENT, address, str(PORT)]
    return subprocess.run(cmd, capture_output=True, timeout=15).returncode == 0


def reaches(netns: str, address: str) -> bool:
    return ping(netns, address) and tcp(netns, address)


def blocked(netns: str, address: str) -> bool:
    """Neither a ping nor a TCP connection gets through (each bounded)."""
    return not ping(netns, address) and not tcp(netns, address)


def hammer(netns: str, address: str, seconds: float, attempt: float = 0.05) -> subprocess.Popen:
    """A client connecting to ``address`` in a tight loop for ``seconds``
    (``counted`` reads its outcome)."""
    argv = [sys.executable, "-c", HAMMER, address, str(PORT), str(seconds), str(attempt)]
    return subprocess.Popen(
        ["ip", "netns", "exec", netns, *argv], stdout=subprocess.PIPE, text=True
    )


@contextmanager
def ready_processes(argv: Callable[[str], list[str]]) -> Iterator[Callable[[str], None]]:
    """``start(netns)`` runs ``argv(netns)`` and waits for its "ready" line; every
    process started is killed after."""
    with processes.announcing() as start:
        yield lambda netns: start(argv(netns), "ready")


def server_starter():
    """Start a server (``SERVER``) in each given container namespace; all killed after."""
    return ready_processes(
        lambda netns: ["ip", "netns", "exec", netns, sys.executable, "-c", SERVER, str(PORT)]
    )


def counted(loop: subprocess.Popen) -> tuple[int, int]:
    """(answered, not answered) connections of a ``hammer``, once it is done."""
    out, _ = loop.communicate(timeout=60)
    ok, failed = out.split()
    return int(ok), int(failed)
