"""The h11 driver of the etcd gateway (``etcd_http``) against a tiny server on 127.0.0.1
whose answers each test writes byte by byte: framing, keep-alive, deadlines that pass in
the middle of a chunk, a kept-alive connection the server closed, garbage."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import h11
import pytest

from netplug.ipam.store.etcd_gateway import (
    RAISE,
    RETRY,
    UNKNOWN,
    EtcdError,
    Gateway,
    leaderless,
    verdict,
)
from netplug.ipam.store.etcd_http import Connection, ProtocolError, StaleConnection

LOOPBACK = "127.0.0.1"
LIMIT = 5.0  # seconds: no socket in these tests waits longer


class Peer:
    """The server's side of one accepted connection (requests read with h11)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.http = h11.Connection(h11.SERVER)

    def request(self) -> tuple[str, bytes]:
        """The next request's target and body."""
        target, body = "", b""
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                self.http.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.Request):
                target = event.target.decode()
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return target, body
            else:
                raise AssertionError(f"unexpected {event!r}")

    def answer(self, *pieces: bytes, pause: float = 0.0) -> None:
        for piece in pieces:
            self.sock.sendall(piece)
            time.sleep(pause)

    def next_cycle(self) -> None:
        """Ready for the next request (the test sent the answer's bytes by hand)."""
        self.http = h11.Connection(h11.SERVER)


@contextlib.contextmanager
def server(handler: Callable[[Peer, int], None]) -> Iterator[tuple[int, list[BaseException]]]:
    """A port on 127.0.0.1 whose connections ``handler(peer, index)`` serves, one at a time;
    errors of the handler are collected and fail the test."""
    errors: list[BaseException] = []
    listener = socket.create_server((LOOPBACK, 0))
    listener.settimeout(LIMIT)

    def serve() -> None:
        index = 0
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            with sock:
                sock.settimeout(LIMIT)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    handler(Peer(sock), index)
                except BaseException as e:
                    errors.append(e)
            index += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], errors
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(LIMIT)
    if errors:
        raise errors[0]


def connect(port: int) -> Connection:
    return Connection(socket.create_connection((LOOPBACK, port), timeout=LIMIT), 0, "localhost")


def soon(seconds: float = 2.0) -> float:
    return time.monotonic() + seconds


def json_answer(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
        % (extra, len(body), body)
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
)
STREAM_END = b"0\r\nGrpc-Trailer-Status: 0\r\n\r\n"  # the gateway sends trailers


def test_a_content_length_answer_and_keep_alive() -> None:
    def handler(peer: Peer, index: int) -> None:
        assert index == 0, "the client opened a second connection"
        for n in range(3):
            assert peer.request() == ("/v3/kv/range", b'{"key":"YQ=="}')
            # The second answer comes in pieces that split its head and its body.
            pieces = json_answer(b'{"count":"%d"}' % n)
            peer.answer(pieces[:20], pieces[20:50], pieces[50:], pause=0.02 * (n == 1))
            peer.next_cycle()

    with server(handler) as (port, _):
        conn = connect(port)
        try:
            for n in range(3):
                conn.send("kv/range", b'{"key":"YQ=="}')
                status, headers = conn.head(soon())
                assert (status, headers[b"content-type"]) == (200, b"application/json")
                assert conn.body(soon()) == b'{"count":"%d"}' % n
                assert conn.used and conn.reusable
        finally:
            conn.close()


def test_connection_close_makes_the_connection_not_reusable() -> None:
    def handler(peer: Peer, index: int) -> None:
        peer.request()
        peer.answer(json_answer(b"{}", b"Connection: close\r\n"))

    with server(handler) as (port, _):
        conn = connect(port)
        try:
            conn.send("kv/range", b"{}")
            assert conn.head(soon())[0] == 200
            assert conn.body(soon()) == b"{}"
            assert not conn.reusable
        finally:
            conn.close()


def test_a_chunked_stream_split_across_reads_yields_each_message() -> None:
    messages = [b'{"result":{"n":"%d"}}' % n for n in range(4)]

    def handler(peer: Peer, index: int) -> None:
        assert peer.request()[0] == "/v3/watch"
        body = chunk(messages[0] + b"\n") + chunk(messages[1] + b"\n" + messages[2][:5])
        body += chunk(messages[2][5:] + b"\n") + chunk(messages[3] + b"\n") + STREAM_END
        stream = STREAM_HEAD + body
        # Split everywhere: in the head, in chunk sizes, in data, in the trailers.
        peer.answer(*(stream[i : i + 7] for i in range(0, len(stream), 7)), pause=0.001)

    with server(handler) as (port, _):
        stream = Gateway([(LOOPBACK, port)]).open_watch({"create_request": {}})
        try:
            got = [stream.next_message(soon()) for _ in messages]
            assert got == [{"result": {"n": str(n)}} for n in range(4)]
            with pytest.raises(ConnectionError, match="ended the watch stream"):
                stream.next_message(soon())
        finally:
            stream.close()


def test_a_deadline_passing_mid_chunk_keeps_the_streams_place() -> None:
    steps = [threading.Event() for _ in range(3)]  # client: go on; server: sent
    sent = [threading.Event() for _ in range(3)]
    message = b'{"result":{"events":[{"kv":{"key":"YQ=="}}]}}\n'
    piece = chunk(message)

    def handler(peer: Peer, index: int) -> None:
        peer.request()
        # In the middle of the chunk's size line, then of its data, then the rest.
        for step, data in enumerate([piece[:3], piece[3:20], piece[20:] + chunk(message)]):
            assert steps[step].wait(LIMIT)
            peer.answer(STREAM_HEAD + data if step == 0 else data)
            sent[step].set()
        peer.answer(STREAM_END)

    with server(handler) as (port, _):
        steps[0].set()  # the head comes with the first piece: open_watch waits for it
        stream = Gateway([(LOOPBACK, port)]).open_watch({"create_request": {}})
        try:
            assert sent[0].wait(LIMIT)
            started = time.monotonic()
            assert stream.next_message(time.monotonic() + 0.1) is None
            steps[1].set()
            assert sent[1].wait(LIMIT)
            assert stream.next_message(time.monotonic() + 0.2) is None
            assert stream.conn.read(time.monotonic() + 0.05) == b""  # nothing more came
            assert time.monotonic() - started < 2
            steps[2].set()
            expected = {"result": {"events": [{"kv": {"key": "YQ=="}}]}}
            assert stream.next_message(soon()) == expected
            assert stream.next_message(soon()) == expected
            with pytest.raises(ConnectionError, match="ended the watch stream"):
                stream.next_message(soon())
        finally:
            stream.close()


def test_a_silent_server_times_out_by_the_deadline() -> None:
    def handler(peer: Peer, index: int) -> None:
        peer.request()
        with contextlib.suppress(OSError):
            peer.sock.recv(1)  # until the client hangs up

    with server(handler) as (port, _):
        conn = connect(port)
        try:
            conn.send("kv/range", b"{}")
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                conn.head(time.monotonic() + 0.2)
            assert 0.15 < time.monotonic() - started < 1.5
        finally:
            conn.close()


def test_a_kept_alive_connection_closed_by_the_server_is_stale() -> None:
    closed = threading.Event()

    def handler(peer: Peer, index: int) -> None:
        peer.request()
        peer.answer(json_answer(b'{"n":"%d"}' % index))
        if index == 0:
            peer.sock.shutdown(socket.SHUT_RDWR)
            closed.set()

    with server(handler) as (port, _):
        conn = connect(port)
        try:
            conn.send("kv/range", b"{}")
            assert conn.head(soon())[0] == 200 and conn.body(soon()) == b'{"n":"0"}'
            assert closed.wait(LIMIT)
            time.sleep(0.05)  # the FIN has arrived
            with pytest.raises(StaleConnection):
                conn.send("kv/range", b"{}")
                conn.head(soon())
        finally:
            conn.close()


def test_the_gateway_retries_a_stale_connection_on_a_new_one() -> None:
    def handler(peer: Peer, index: int) -> None:
        peer.request()
        peer.answer(json_answer(b'{"n":"%d"}' % index))
        peer.sock.shutdown(socket.SHUT_RDWR)  # every connection: one answer only

    with server(handler) as (port, _):
        gateway = Gateway([(LOOPBACK, port)])
        try:
            assert gateway.call("kv/range", {}, idempotent=False) == {"n": "0"}
            time.sleep(0.05)
            # A write too: the closed connection never got it.
            assert gateway.call("kv/put", {}, idempotent=False) == {"n": "1"}
        finally:
            gateway.close()


def test_a_new_connection_closed_before_answering_is_not_stale() -> None:
    def handler(peer: Peer, index: int) -> None:
        peer.request()

    with server(handler) as (port, _):
        conn = connect(port)
        try:
            conn.send("kv/put", b"{}")
            with pytest.raises(ConnectionError) as info:
                conn.head(soon())
            assert not isinstance(info.value, StaleConnection)
        finally:
            conn.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_garbage_is_a_protocol_error(answer: bytes) -> None:
    def handler(peer: Peer, index: int) -> None:
        peer.request()
        peer.answer(answer)
        with contextlib.suppress(OSError):
            peer.sock.recv(1)

    with server(handler) as (port, _):
        conn = connect(port)
        try:
            conn.send("kv/range", b"{}")
            with pytest.raises(ProtocolError):
                conn.head(soon())
                conn.body(soon())
        finally:
            conn.close()


def test_an_answer_cut_short_is_a_connection_error() -> None:
    def handler(peer: Peer, index: int) -> None:
        peer.request()
        peer.answer(json_answer(b'{"count":"1"}')[:-4])

    with server(handler) as (port, _):
        conn = connect(port)
        try:
            conn.send("kv/range", b"{}")
            assert conn.head(soon())[0] == 200
            started = time.monotonic()
            with pytest.raises(ConnectionError, match="middle of an answer"):
                conn.body(soon())
            assert time.monotonic() - started < 1
        finally:
            conn.close()


# -- what a call does with etcd's error answers (pure) -------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "idempotent", "expected"),
    [
        (14, "etcdserver: no leader", False, RETRY),  # refused before proposing: not applied
        (2, "raft proposal dropped", False, RETRY),
        (14, "etcdserver: request timed out", False, UNKNOWN),  # proposed: may be applied
        (14, "etcdserver: leader changed", False, UNKNOWN),
        (14, "etcdserver: request timed out", True, RETRY),  # a read: repeat it
        (3, "etcdserver: duplicate key given in txn request", True, RAISE),
        (5, "etcdserver: requested lease not found", False, RAISE),
    ],
)
def test_verdict_on_etcd_errors(code, message, idempotent, expected) -> None:
    assert verdict(EtcdError(code, message), idempotent) == expected


def test_only_a_member_without_leader_counts_as_electing() -> None:
    assert leaderless(EtcdError(14, "etcdserver: no leader"))
    assert not leaderless(EtcdError(14, "etcdserver: request timed out"))
