"""What only the etcd store does: watch resume over dropped streams, compaction,
failover between endpoints, outages (StoreUnavailable in time, recovery after a
restart), and never repeating a write whose answer was lost."""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_testing import KEYS, claim_all, collect, results_of_children, summary

from netplug.ipam.store.base import Compacted, Compare, Delete, Put, StoreUnavailable
from netplug.ipam.store.etcd import EtcdStore
from netplug.ipam.store.etcd_gateway import DOWN_HOLD, RETRY_WINDOW
from netplug.ipam.store.url import open_store

from etcd_server import EtcdProcess, start_etcd

LOOPBACK = "127.0.0.1"


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of etcd whose connections a test can cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.accepted = 0
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self._start()

    def _start(self) -> None:
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=2)
            except OSError:
                return
            upstream.settimeout(None)
            with self._lock:
                self.accepted += 1
                self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every open connection (the clients see the stream end)."""
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def pause(self) -> None:
        """Cut, and refuse new connections until ``resume``."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread in accept()
        self._listener.close()
        self.cut()

    def resume(self) -> None:
        self._listener = socket.create_server((LOOPBACK, self.port))
        self._start()

    def close(self) -> None:
        self.pause()


@pytest.fixture
def etcd(etcd_server: EtcdProcess) -> EtcdProcess:
    etcd_server.reset()
    return etcd_server


@pytest.fixture
def direct(etcd: EtcdProcess) -> Iterator[EtcdStore]:
    store = open_store(etcd.url)
    assert isinstance(store, EtcdStore)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def proxy(etcd: EtcdProcess) -> Iterator[Proxy]:
    p = Proxy(etcd.client_port)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def outage_etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    """An etcd of the test's own, to stop and start."""
    etcd = start_etcd(tmp_path)
    try:
        yield etcd
    finally:
        etcd.stop()


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections and never answers."""
    with socket.create_server((LOOPBACK, 0), backlog=16) as listener:
        yield listener.getsockname()[1]


def elapsed(fn, *args) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        fn(*args)
    except BaseException as e:
        return time.monotonic() - started, e
    return time.monotonic() - started, None


# -- watch ---------------------------------------------------------------------------------


def test_watch_resumes_after_the_stream_is_dropped(proxy, direct, etcd) -> None:
    store = open_store(f"etcd://{LOOPBACK}:{proxy.port}")
    try:
        r = direct.status()
        events = store.watch("w/", 0, timeout=0.05)
        assert next(events) == []
        direct.put("w/1", b"a")
        assert summary(collect(events, 1), r) == [("put", "w/1", 1)]
        proxy.cut()  # the stream breaks while nobody reads it
        for i in range(2, 6):
            direct.put(f"w/{i}", b"b")
        assert summary(collect(events, 4), r) == [("put", f"w/{i}", i) for i in range(2, 6)]
        assert proxy.accepted >= 2
    finally:
        store.close()


def test_watch_rides_out_a_refusing_gap_and_misses_nothing(proxy, direct) -> None:
    store = open_store(f"etcd://{LOOPBACK}:{proxy.port}")
    try:
        r = direct.status()
        events = store.watch("", 0, timeout=0.05)
        assert next(events) == []
        proxy.pause()
        direct.txn([], [Put("a", b"1"), Put("b", b"2")])
        direct.delete("a")
        assert [next(events) for _ in range(3)] == [[], [], []]  # retrying, still yielding
        proxy.resume()
        got = collect(events, 3)
        assert summary(got, r) == [("put", "a", 1), ("put", "b", 1), ("delete", "a", 2)]
        assert got[2].prev_value == b"1"
    finally:
        store.close()


def test_watch_below_the_compacted_revision(direct, etcd) -> None:
    r = direct.status()
    for i in range(10):
        direct.put("c", str(i).encode())
    etcd.compact(r + 6)
    with pytest.raises(Compacted) as info:  # etcd tells within its sync interval (0.1 s)
        collect(direct.watch("c", r + 2, timeout=0.05), 1)
    floor = info.value.compact_revision
    assert floor == r + 5  # the newest revision gone, as the SQLite store says it
    kept = collect(direct.watch("c", floor + 1, timeout=0.05), 10 - 5)
    assert [e.kv.mod_revision - r for e in kept] == [6, 7, 8, 9, 10]


# -- endpoints and outages ---------------------------------------------------------------------


def test_a_dead_endpoint_is_skipped(etcd) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind((LOOPBACK, 0))
        dead = s.getsockname()[1]
    store = open_store(f"etcd://{LOOPBACK}:{dead},{etcd.endpoint}")
    try:
        r = store.put("a", b"1")
        assert store.get("a").mod_revision == r
        assert summary(collect(store.watch("", r, timeout=0.05), 1)) == [("put", "a", r)]
    finally:
        store.close()


def test_unreachable_etcd_is_unavailable_quickly_and_says_what_to_do() -> None:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    store = open_store(f"etcd://{LOOPBACK}:{port}")
    took, error = elapsed(store.put, "a", b"1")
    assert isinstance(error, StoreUnavailable), error
    assert took < 5
    assert f"{LOOPBACK}:{port}" in str(error)
    assert "connection refused" in str(error)
    assert "try again later" in str(error)


def test_calls_right_after_an_outage_was_found_try_once() -> None:
    """A CNI call makes several store calls (identity check, then the command): only
    the first waits the outage out; the next, within DOWN_HOLD, tries each endpoint
    once (so it would still see etcd come back) and gives up at once."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    store = open_store(f"etcd://{LOOPBACK}:{port}")
    took, error = elapsed(store.get, "a")
    assert isinstance(error, StoreUnavailable) and took >= RETRY_WINDOW, (took, error)
    took, error = elapsed(store.put, "a", b"1")
    assert isinstance(error, StoreUnavailable) and took < 0.1, (took, error)
    assert "connection refused" in str(error)
    time.sleep(DOWN_HOLD)
    took, error = elapsed(store.get, "a")  # tried again, in full
    assert isinstance(error, StoreUnavailable) and took >= RETRY_WINDOW, (took, error)


def test_silent_endpoints_time_out_within_five_seconds() -> None:
    with silent_server() as one, silent_server() as two:
        store = open_store(f"etcd://{LOOPBACK}:{one},{LOOPBACK}:{two}")
        # A read tries each endpoint for 2 s; a write that was sent is not sent again.
        took, error = elapsed(store.get, "a")
        assert isinstance(error, StoreUnavailable), error
        assert 3.5 < took < 6.5  # upper bound: slack for a loaded machine
        assert str(error).count("timed out") == 2
        took, error = elapsed(store.txn, [Compare.absent("a")], [Put("a", b"1")])
        assert isinstance(error, StoreUnavailable), error
        assert 1.5 < took < 4
        assert "may or may not have been applied" in str(error)


def test_outage_then_recovery_after_a_restart(outage_etcd) -> None:
    store = open_store(outage_etcd.url)
    other = open_store(outage_etcd.url)
    try:
        r = store.put("k", b"before")
        events = store.watch("", 0, timeout=0.05)
        assert next(events) == []
        # A restart between two calls: the kept-alive connection is stale, not an error.
        outage_etcd.stop()
        outage_etcd.start()
        assert store.get("k").value == b"before"
        outage_etcd.stop()
        for call in (store.status, lambda: store.put("k", b"during")):
            took, error = elapsed(call)
            assert isinstance(error, StoreUnavailable), error
            assert took < 5
        assert next(events) == []  # the watch keeps yielding while it retries
        outage_etcd.start()
        other.put("k", b"after")
        other.delete("k")
        assert summary(collect(events, 2), r) == [("put", "k", 1), ("delete", "k", 2)]
        assert store.put("k", b"again") == r + 3
    finally:
        store.close()
        other.close()


def test_a_watch_gives_up_when_etcd_stays_down(outage_etcd) -> None:
    store = open_store(outage_etcd.url)
    events = store.watch("", 0, timeout=0.2)
    assert next(events) == []
    outage_etcd.stop()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        while True:
            assert next(events) == []
    assert time.monotonic() - started < 6


# -- writes whose answer is lost ------------------------------------------------------------


@contextlib.contextmanager
def hanging_up_server() -> Iterator[tuple[int, list[bytes]]]:
    """A port that reads each request, then closes the connection without answering."""
    requests: list[bytes] = []
    listener = socket.create_server((LOOPBACK, 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    requests.append(conn.recv(65536))

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1], requests
    finally:
        listener.close()


def test_a_write_is_not_sent_twice_when_its_answer_is_lost() -> None:
    with hanging_up_server() as (port, requests):
        store = open_store(f"etcd://{LOOPBACK}:{port}")
        with pytest.raises(StoreUnavailable, match="may or may not have been applied"):
            store.txn([Compare.absent("a")], [Put("a", b"1")])
        assert len(requests) == 1
        with pytest.raises(StoreUnavailable, match="cannot be reached"):
            store.get("a")  # a read is safe to repeat: it was
        assert len(requests) > 2


def test_writing_a_key_twice_in_one_txn_is_refused(direct) -> None:
    r = direct.status()
    with pytest.raises(ValueError, match="duplicate key"):
        direct.txn([], [Put("a", b"1"), Put("a", b"2")])
    with pytest.raises(ValueError, match="duplicate key"):
        direct.txn([Compare("gone", "value", "=", b"")], [Delete("a"), Put("a", b"2")])
    assert direct.status() == r
    # Either branch may write what the other writes, also under an emulated compare.
    result = direct.txn([Compare("gone", "value", "!=", b"x")], [Put("a", b"1")], [Delete("a")])
    assert result.succeeded and direct.get("a").value == b"1"


# -- processes ------------------------------------------------------------------------------------


def claim_in_child(store: EtcdStore, index: int, results) -> None:
    keys = KEYS[:100]
    results.put(claim_all(store, f"p{index}", keys[index * 25 :] + keys[: index * 25]))


def test_forked_children_do_not_share_the_parents_connection(direct) -> None:
    direct.status()  # the children inherit this thread's open connection
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    arguments = [(direct, i, results) for i in range(4)]
    created = results_of_children(ctx, claim_in_child, arguments, results)
    assert sum(created) == 100
    assert direct.put("after", b"1") > 0  # the parent's connection still works
    assert len(direct.range("alloc/", prefix=True).kvs) == 100


# -- the URL -------------------------------------------------------------------------------------


def test_open_store_names_the_endpoints_in_its_url(etcd) -> None:
    url = f"etcd://{etcd.endpoint},{LOOPBACK}:1"
    store = open_store(url)
    try:
        assert isinstance(store, EtcdStore)
        assert store.url == url
        assert store.status() > 0
    finally:
        store.close()


def test_tls_with_client_certificates(tmp_path) -> None:
    etcd = start_etcd(tmp_path, tls=True)
    try:
        assert etcd.url.startswith("etcds://")
        store = open_store(etcd.url)
        try:
            r = store.put("a", b"1")
            assert store.get("a").mod_revision == r
            assert summary(collect(store.watch("", r, timeout=0.05), 1)) == [("put", "a", r)]
        finally:
            store.close()
        assert etcd.tls is not None
        anonymous = open_store(f"etcds://{etcd.endpoint}?cacert={etcd.tls.cacert}")
        with pytest.raises(StoreUnavailable, match="cannot be reached"):
            anonymous.get("a")  # the server wants a client certificate
        untrusted = open_store(f"etcds://{etcd.endpoint}")  # the system CAs do not know it
        with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.get("a")
    finally:
        etcd.stop()
