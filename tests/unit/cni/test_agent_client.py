"""The plugin's side of the agent socket when the agent misbehaves or dies
mid-call: real abstract unix sockets, a fake agent in a thread that reads the
call and then answers, hangs up, resets or sends a torn reply."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from netplug.cni import agent_client as client
from netplug.cni import agent_wire as wire
from netplug.cni import main

ADD = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "PATH": "/bin"}
CONF = b'{"cniVersion": "1.0.0", "name": "blue", "type": "netplug"}'


def read_call(conn: socket.socket) -> None:
    while conn.recv(65536):
        pass


def reply(data: bytes) -> Callable[[socket.socket], None]:
    def send(conn: socket.socket) -> None:
        read_call(conn)
        conn.sendall(data)

    return send


def trickles(conn: socket.socket) -> None:
    """Reads the call, then sends a byte of a reply every 0.1 s, never all of it."""
    read_call(conn)
    for _ in range(100):
        try:
            conn.send(b"0")
        except OSError:  # the plugin gave up: good
            return
        time.sleep(0.1)


AGENTS: dict[str, Callable[[socket.socket], None]] = {
    "answers": reply(wire.encode_reply(0, "/log", "ADD ok", b"{}")),
    "hangs-up": read_call,
    # Closing with the call half read: the kernel resets the plugin's end (as when
    # the agent is killed before it read the call).
    "resets": lambda conn: conn.recv(1),
    "tears-its-reply": reply(b"0\n/var/log/netpl"),
    "sends-garbage": reply(b"\x00\xffnot a reply at all"),
    "trickles": trickles,
}


@pytest.fixture
def agent() -> Iterator[Callable[[str], str]]:
    """A fake agent on a fresh abstract socket that takes one call and acts."""
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(behaviour: str) -> str:
        name = f"\0netplugd-test-{uuid.uuid4().hex}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(name)
        listener.listen(1)
        listeners.append(listener)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                AGENTS[behaviour](conn)

        threads.append(threading.Thread(target=serve, daemon=True))
        threads[-1].start()
        return name

    yield start
    for listener in listeners:
        listener.close()
    for thread in threads:
        thread.join(5)


def test_an_answer_is_returned(agent):
    assert client.call(ADD, CONF, 5, agent("answers")) == (0, "/log", "ADD ok", b"{}")


def test_no_agent_is_none():
    assert client.call(ADD, CONF, 5, f"\0netplugd-test-{uuid.uuid4().hex}") is None


@pytest.mark.parametrize(
    ("behaviour", "what"),
    [
        ("hangs-up", "(it closed the connection without an answer)"),
        ("resets", "(connection reset by peer)"),
        ("tears-its-reply", "(its reply is cut short or garbled: 16 bytes, '0\\n/var/log/netpl')"),
        ("sends-garbage", "(its reply is cut short or garbled: 20 bytes,"),
    ],
)
def test_an_agent_that_goes_away_mid_call_is_named(agent, behaviour, what):
    with pytest.raises(client.AgentGone) as gone:
        client.call(ADD, CONF, 5, agent(behaviour))
    message = str(gone.value)
    assert message.startswith("netplugd went away during the call ")
    assert what in message
    assert "try again" in message


def test_an_agent_that_never_answers_times_out():
    name = f"\0netplugd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(name)
        listener.listen(1)  # accepted by the kernel, never by anyone
        with pytest.raises(client.AgentTimeout, match=r"did not answer within 0\.5 s"):
            client.call(ADD, CONF, 0.5, name)


@contextlib.contextmanager
def full_backlog() -> Iterator[tuple[str, socket.socket]]:
    """A listener that accepts nothing, its backlog filled (as when every worker
    of the agent is stuck): a blocking connect would wait for room for ever."""
    name = f"\0netplugd-test-{uuid.uuid4().hex}"
    queued: list[socket.socket] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(name)
        listener.listen(0)
        try:
            for _ in range(64):  # bounded: listen(0) holds one
                waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                queued.append(waiting)
                waiting.setblocking(False)
                try:
                    waiting.connect(name)
                except BlockingIOError:
                    break
            else:
                pytest.fail("the listen backlog never filled")
            yield name, listener
        finally:
            for waiting in queued:
                waiting.close()


def test_a_full_listen_backlog_is_code_11_within_the_deadline():
    with full_backlog() as (name, _listener):
        started = time.monotonic()
        with pytest.raises(client.AgentTimeout, match=r"took no call .* nothing was done"):
            client.call(ADD, CONF, 0.5, name)
        assert 0.5 <= time.monotonic() - started < 2.5


def test_a_call_waiting_on_a_full_backlog_goes_through_once_there_is_room():
    replies: list = []
    with full_backlog() as (name, listener):
        caller = threading.Thread(target=lambda: replies.append(client.call(ADD, CONF, 10, name)))
        caller.start()
        listener.settimeout(10)
        try:
            listener.accept()[0].close()  # the connection queued first: room for the call
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                read_call(conn)
                conn.sendall(wire.encode_reply(0, "/log", "ADD ok", b"{}"))
        finally:
            caller.join(10)
    assert replies == [(0, "/log", "ADD ok", b"{}")]


def test_a_reply_that_trickles_in_does_not_stretch_the_wait(agent):
    name = agent("trickles")
    started = time.monotonic()
    with pytest.raises(client.AgentTimeout, match=r"did not answer within 0\.5 s"):
        client.call(ADD, CONF, 0.5, name)
    assert time.monotonic() - started < 2.5  # one deadline, not one per recv


def test_the_plugins_error_for_it_is_code_11_and_goes_to_the_log_file(tmp_path):
    log_file = tmp_path / "netplug.log"
    conf = json.dumps({"cniVersion": "0.4.0", "name": "blue", "logFile": str(log_file)})
    status, logged_to, summary, stdout = main._error_reply(
        ADD, conf.encode(), 11, "netplugd went away during the call (x)"
    )
    assert status == 1 and logged_to == str(log_file)
    assert json.loads(stdout) == {
        "cniVersion": "0.4.0",
        "code": 11,
        "msg": "netplugd went away during the call (x)",
    }
    assert summary == (
        "ADD container=c1 ifname=eth0 network=blue error 11: netplugd went away during the call (x)"
    )


@pytest.mark.parametrize("stdin", [b"", b"[1, 2]", b'{"logFile": "relative.log"}', b"\xff"])
def test_without_a_usable_config_the_error_goes_to_the_default_log(stdin):
    status, logged_to, _summary, stdout = main._error_reply(ADD, stdin, 11, "gone")
    assert status == 1 and logged_to == main.DEFAULT_LOG_FILE
    assert json.loads(stdout)["code"] == 11


def test_the_default_log_file_is_the_configs():
    from netplug.cni.netconf import NetConf

    assert NetConf.log_file == main.DEFAULT_LOG_FILE
