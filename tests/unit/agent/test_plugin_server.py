"""netplugd's plugin socket: worker threads, each call through to its reply.

On an abstract unix socket of the test's own name (no namespace, no root):
VERSION needs neither store nor netlink.
"""

import contextlib
import json
import select
import socket
import threading
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry

from netplug.agent import plugin_server
from netplug.agent.metrics import AgentMetrics
from netplug.agent.plugin_server import PluginServer
from netplug.cni import MAX_STDIN
from netplug.cni import agent_client as client
from netplug.cni import agent_wire as wire
from netplug.locks import KeyedLocks

from waiting import wait_for

VERSION = {"CNI_COMMAND": "VERSION"}
STDIN = b'{"cniVersion": "1.0.0"}'


@pytest.fixture
def serve(monkeypatch):
    """Start a PluginServer with ``workers`` threads; always closed."""
    servers = []

    def start(workers: int = plugin_server.WORKERS) -> str:
        monkeypatch.setattr(plugin_server, "WORKERS", workers)
        name = f"\0netplugd-test-{uuid.uuid4().hex}"
        server = PluginServer(None, AgentMetrics(CollectorRegistry()), socket_name=name)
        server.start()
        servers.append(server)
        return name

    yield start
    for server in servers:
        server.close()


def version(name: str):
    return client.call(VERSION, STDIN, timeout=5, socket_name=name)


def test_a_call_is_answered(serve):
    status, _log, _summary, stdout = version(serve())
    assert status == 0
    assert json.loads(stdout)["cniVersion"] == "1.0.0"
    assert "1.1.0" in json.loads(stdout)["supportedVersions"]


def test_a_burst_is_answered_in_full(serve):
    name = serve(workers=2)
    replies = []
    threads = [threading.Thread(target=lambda: replies.append(version(name))) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [r[0] for r in replies] == [0] * 50


def test_a_bug_costs_one_call_not_the_worker(serve, monkeypatch, caplog):
    name = serve(workers=1)
    real = plugin_server.handle
    calls = iter([RuntimeError("a bug"), None])

    def handle(*args):
        failure = next(calls, None)
        if failure is not None:
            raise failure
        return real(*args)

    monkeypatch.setattr(plugin_server, "handle", handle)
    with pytest.raises(client.AgentGone, match="closed the connection without an answer"):
        version(name)
    assert "plugin call failed" in caplog.text
    assert version(name)[0] == 0  # the one worker still serves


def test_a_second_server_on_the_same_socket_is_refused(serve):
    name = serve()
    other = PluginServer(None, AgentMetrics(CollectorRegistry()), socket_name=name)
    with pytest.raises(SystemExit, match="another netplugd"):
        other.start()


def test_close_stops_every_worker_at_once(monkeypatch):
    monkeypatch.setattr(plugin_server, "WORKERS", 4)
    name = f"\0netplugd-test-{uuid.uuid4().hex}"
    server = PluginServer(None, AgentMetrics(CollectorRegistry()), socket_name=name)
    server.start()
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 4  # at once: well inside JOIN_TIMEOUT (5 s)
    assert not [t for t in threading.enumerate() if t.name.startswith("cni-")]
    assert client.call(VERSION, STDIN, socket_name=name) is None  # nobody listens


def test_a_client_that_trickles_its_call_does_not_hold_the_worker(serve, monkeypatch):
    monkeypatch.setattr(plugin_server, "READ_TIMEOUT", 0.5)
    name = serve(workers=1)
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        slow.connect(name)
        started = time.monotonic()
        hung_up = False
        for _ in range(50):  # a byte every 0.1 s, never the end of the call
            try:
                slow.send(b"1")
                # The pace of the trickle, and the wait for the agent's hang-up.
                if select.select([slow], [], [], 0.1)[0]:
                    hung_up = slow.recv(1) == b""
                    break
            except OSError:  # reset: the agent hung up with bytes unread; good
                hung_up = True
                break
        assert hung_up
        assert time.monotonic() - started < 4  # READ_TIMEOUT 0.5 s, plus a loaded machine
        assert version(name)[0] == 0
    finally:
        slow.close()


def test_a_call_its_plugin_gave_up_on_is_not_started(serve, monkeypatch, caplog):
    name = serve(workers=1)
    started = []
    monkeypatch.setattr(plugin_server, "handle", lambda env, *rest: started.append(env))
    late = {**VERSION, "CNI_CONTAINERID": "c1", client.DEADLINE: f"{time.monotonic() - 1:.3f}"}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(name)
        sock.sendall(wire.encode_call(late, STDIN))
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)
        assert sock.recv(100) == b""  # closed, no reply
    assert started == []
    assert "skipped a VERSION of c1/- its plugin stopped waiting for" in caplog.text


def test_calls_for_one_attachment_run_one_at_a_time(monkeypatch):
    """A DEL sent after the runtime gave up on an ADD waits for that ADD: the
    second call of "a" arrives while the first is held, and starts only after
    it; "b" runs beside them."""
    monkeypatch.setattr(plugin_server, "WORKERS", 4)
    name = f"\0netplugd-test-{uuid.uuid4().hex}"
    server = PluginServer(None, AgentMetrics(CollectorRegistry()), socket_name=name)
    arrived: list[str] = []  # calls at the attachment lock, in order
    started: list[str] = []  # calls past it, in the handler
    release = threading.Event()
    real_lock, real_handle = server._one_at_a_time, plugin_server.handle

    def at_the_lock(env):
        arrived.append(env["CNI_CONTAINERID"])
        return real_lock(env)

    def held(env, *rest):
        started.append(env["CNI_CONTAINERID"])
        release.wait(10)
        return real_handle(env, *rest)

    monkeypatch.setattr(server, "_one_at_a_time", at_the_lock)
    monkeypatch.setattr(plugin_server, "handle", held)
    server.start()
    threads = []

    def send(container: str) -> None:
        env = {**VERSION, "CNI_CONTAINERID": container, "CNI_IFNAME": "eth0"}
        threads.append(
            threading.Thread(target=client.call, args=(env, STDIN), kwargs={"socket_name": name})
        )
        threads[-1].start()

    try:
        send("a")
        assert wait_for(lambda: started == ["a"])
        send("a")
        send("b")
        assert wait_for(lambda: sorted(arrived) == ["a", "a", "b"] and "b" in started)
        assert sorted(started) == ["a", "b"]  # the second "a" waits at its lock
        release.set()
        assert wait_for(lambda: sorted(started) == ["a", "a", "b"])
    finally:
        release.set()
        for t in threads:
            t.join(10)
        server.close()


def test_keyed_locks_are_dropped_when_unused() -> None:
    locks = KeyedLocks()
    with locks.held("a"), locks.held("b"):
        assert len(locks) == 2
    assert len(locks) == 0


def test_a_call_longer_than_any_plugin_sends_is_refused_unread(serve, monkeypatch, caplog):
    monkeypatch.setattr(wire, "MAX_CALL", 4096)
    name = serve(workers=1)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(name)
        sock.settimeout(5)
        sock.sendall(wire.encode_call(VERSION, b" " * 65536))  # and no end of it
        status, _log, summary, stdout = wire.decode_reply(read_reply(sock))
    assert status == 1 and summary == "invalid call: more than 4096 bytes (stdin at most 16777216)"
    error = json.loads(stdout)
    assert error["code"] == 6 and error["msg"].startswith("call refused: more than 4096 bytes")
    assert "refused a plugin call from pid" in caplog.text
    assert version(name)[0] == 0  # the worker serves on


def read_reply(sock: socket.socket) -> bytes:
    """Everything until the agent closes the connection (bounded by the socket's
    timeout). Closed with the call's rest unread, its end resets ours after the reply."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_the_longest_call_a_plugin_sends_is_read_and_answered(serve):
    """stdin a byte past MAX_STDIN: within the cap, refused by the parser (code 6)."""
    name = serve(workers=1)
    status, _log, _summary, stdout = client.call(
        VERSION, b" " * (MAX_STDIN + 1), timeout=10, socket_name=name
    )
    assert status == 1
    assert "stdin holds more than 16 MiB" in json.loads(stdout)["msg"]
